"""The one outcome-file parser (issue 13 item 10): big fields, bounded memory, uploaded buffers, FORMAT.md's rules.

``evals.sources.read_outcomes`` is what the CLI, configs and the app's upload all use.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evals.exceptions import SchemaError
from evals.sources import read_outcomes
from evals.sources.long_format import DEFAULT_MAX_BYTES


def rows(n_samples: int = 3, models=("a", "b"), prompt: str = "What is 2+2?") -> list[dict]:
    return [
        dict(sample_id=f"s{i}", model=m, prompt=prompt, score=float((i + j) % 2), cost_usd=0.001 * (j + 1))
        for i in range(n_samples)
        for j, m in enumerate(models)
    ]


def error_of(*args, **kw) -> str:
    with pytest.raises(SchemaError) as info:
        read_outcomes(*args, **kw)
    message = str(info.value)
    assert "\n" not in message  # one line
    return message


def test_a_300_kb_prompt_in_a_csv_is_read_intact(tmp_path):
    prompt = "word, with a comma and a \"quote\"\n" * 9_500  # ~300 KB in one quoted field
    assert len(prompt) > 300_000
    path = tmp_path / "long.csv"
    pd.DataFrame(rows(prompt=prompt)).to_csv(path, index=False)
    table = read_outcomes(path)
    assert table.n_samples == 3 and set(table.frame["prompt"]) == {prompt}


def test_parquet_over_the_row_limit_is_refused_from_metadata_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "many.parquet"
    pd.DataFrame(rows(n_samples=600)).to_parquet(path)

    def no_read(*args, **kwargs):
        raise AssertionError("the data must not be read when the metadata already says no")

    monkeypatch.setattr(pq.ParquetFile, "read", no_read)
    message = error_of(path, max_rows=1000)
    assert str(path) in message and "1,200 rows is over the limit of 1,000 rows (max_rows)" in message


def test_a_small_parquet_that_decodes_to_gigabytes_is_refused_with_bounded_memory(tmp_path):
    # 800 rows sharing one 1 MB prompt: dictionary-encoded, the file is tiny; decoded it is 800 MB (the
    # limit is lowered to 256 MB so that a regression costs seconds, not the minutes a 4 GB decode would).
    frame = pd.DataFrame(rows(n_samples=400)).drop(columns="prompt")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    prompt = pa.DictionaryArray.from_arrays(pa.array([0] * len(frame), pa.int32()), pa.array(["x" * 1_000_000]))
    path = tmp_path / "bomb.parquet"
    pq.write_table(table.append_column("prompt", prompt), path, compression="zstd")
    assert path.stat().st_size < 100_000
    # Peak memory of a fresh process reading it, against the same process after its imports.
    probe = textwrap.dedent(f"""
        import resource, sys
        from evals.exceptions import SchemaError
        from evals.sources import read_outcomes
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            read_outcomes({str(path)!r}, max_bytes=256 * 1024**2)
        except SchemaError as exc:
            print(exc, file=sys.stderr)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "once decoded, over the limit of 256.0 MB (max_bytes)" in done.stderr and str(path) in done.stderr
    grown_mb = int(done.stdout.strip())
    assert grown_mb < 100, f"peak memory grew by {grown_mb} MB reading a {path.stat().st_size} byte file"
    assert DEFAULT_MAX_BYTES == 2 * 1024**3


def test_a_parquet_whose_pages_decompress_past_the_limit_is_refused_from_metadata(tmp_path):
    frame = pd.DataFrame(rows(n_samples=50, prompt="y" * 20_000))
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.Table.from_pandas(frame), path, compression="zstd", use_dictionary=False)
    assert path.stat().st_size < 100_000
    message = error_of(path, max_bytes=1_000_000)
    assert "uncompressed, over the limit of 1.0 MB (max_bytes)" in message


def test_text_files_over_the_byte_or_row_limit_are_refused(tmp_path):
    path = tmp_path / "o.csv"
    pd.DataFrame(rows(n_samples=20)).to_csv(path, index=False)
    assert "over the limit of" in error_of(path, max_bytes=200)
    assert "more rows than over the limit" not in error_of(path, max_rows=39)
    assert "o.csv: more rows than the limit of 39 rows (max_rows)" in error_of(path, max_rows=39)
    assert read_outcomes(path, max_rows=40, max_bytes=None).n_samples == 20


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_an_uploaded_buffer_reads_like_the_file(tmp_path, suffix):
    frame = pd.DataFrame(rows())
    path = tmp_path / f"upload{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    from_path = read_outcomes(path)
    data = path.read_bytes()
    from_bytes = read_outcomes(data, name=f"mine{suffix}")
    handle = io.BytesIO(data)
    handle.read()  # an upload widget may already have been read: the parser rewinds it
    from_handle = read_outcomes(handle, name=f"mine{suffix}")
    for table in (from_bytes, from_handle):
        pd.testing.assert_frame_equal(table.frame, from_path.frame)
    assert from_bytes.card.name == "mine"
    if suffix != ".parquet":
        assert from_bytes.card.source == f"uploaded file mine{suffix}"


def test_an_upload_follows_format_md_token_only_rows_and_incomplete_samples(tmp_path):
    # The app's old parser refused both; FORMAT.md accepts them (tokens are priced, partial samples dropped).
    text = (
        "sample_id,model,score,input_tokens,output_tokens\n"
        "s1,gpt-4o-2024-05-13,1,100,20\n"
        "s1,Llama-3.1-8B-Instruct,0,100,30\n"
        "s2,gpt-4o-2024-05-13,1,80,10\n"
    )
    table = read_outcomes(text.encode(), name="tokens.csv")
    assert table.n_samples == 1 and (table.frame["cost_usd"] > 0).all()
    assert table.card.extra["incomplete_samples_dropped"] == 1


def test_buffer_errors_name_the_uploaded_file_and_the_line():
    bad = b"sample_id,model,score,cost_usd\ns1,a,1,0.1\ns1,b,1.5,0.1\n"
    message = error_of(bad, name="upload.csv")
    assert "upload.csv" in message and "line 3" in message and "'score'" in message
    assert "needs its file name" in error_of(b"x")
    assert "unknown outcome file type '.xlsx'" in error_of(b"x", name="book.xlsx")
    assert "empty file" in error_of(b"", name="upload.jsonl")
    assert "not a readable Parquet file" in error_of(b"not parquet", name="u.parquet")


def test_a_json_array_file_is_read_and_its_errors_name_the_line(tmp_path):
    path = tmp_path / "o.json"
    pd.DataFrame(rows()).to_json(path, orient="records", indent=2)
    assert read_outcomes(path).n_samples == 3
    bad = '[\n {"sample_id": "s1", "model": "a", "score": 1, "cost_usd": 0},\n 7\n]'
    assert "line 3: expected a JSON object, got int" in error_of(bad.encode(), name="o.json")
