"""Bad input: every error names the file, the line (row) and the column, and the CLI prints one line."""

from __future__ import annotations

import pytest

from evals import sources
from evals.cli import main
from evals.exceptions import DataNotFoundError, SchemaError
from evals.sources import routerbench

HEADER = "sample_id,model,score,cost_usd\n"
GOOD = "a,m1,1,0.01\na,m2,0,0.001\n"


def _write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def _error(path) -> str:
    with pytest.raises(SchemaError) as info:
        sources.load(str(path))
    return str(info.value)


def test_malformed_csv_row(tmp_path):
    path = _write(tmp_path, "o.csv", HEADER + GOOD + "b,m1,1\n")
    msg = _error(path)
    assert str(path) in msg and "line 4" in msg and "3 fields" in msg and "header has 4" in msg


def test_malformed_csv_quote(tmp_path):
    # an unterminated quote swallows the rest of the file into one field: the row is reported
    path = _write(tmp_path, "o.csv", HEADER + GOOD + 'b,"m1,1,0.01\nb,m2,0,0.002\n')
    msg = _error(path)
    assert str(path) in msg and "line 4" in msg and "malformed CSV" in msg


def test_missing_column(tmp_path):
    path = _write(tmp_path, "o.csv", "sample_id,model,cost_usd\na,m1,0.01\n")
    msg = _error(path)
    assert str(path) in msg and "missing required column(s) ['score']" in msg and "columns present" in msg


def test_misnamed_column_gets_a_hint(tmp_path):
    path = _write(tmp_path, "o.csv", "sample_id,model,score,cost\na,m1,1,0.01\n")
    msg = _error(path)
    assert str(path) in msg and "'cost_usd'" in msg and "found 'cost': rename it" in msg


def test_score_outside_unit_interval(tmp_path):
    path = _write(tmp_path, "o.csv", HEADER + GOOD + "b,m1,1.5,0.01\nb,m2,0,0.001\n")
    msg = _error(path)
    assert str(path) in msg and "line 4" in msg and "'score' is 1.5" in msg and "[0, 1]" in msg


def test_score_not_a_number(tmp_path):
    path = _write(tmp_path, "o.jsonl", '{"sample_id": "a", "model": "m", "score": "high", "cost_usd": 0.1}\n')
    msg = _error(path)
    assert str(path) in msg and "line 1" in msg and "'score' is 'high'" in msg


def test_negative_cost(tmp_path):
    path = _write(tmp_path, "o.csv", HEADER + "a,m1,1,-0.01\na,m2,0,0.001\n")
    msg = _error(path)
    assert str(path) in msg and "line 2" in msg and "'cost_usd'" in msg and ">= 0" in msg


def test_duplicate_sample_model(tmp_path):
    path = _write(tmp_path, "o.csv", HEADER + GOOD + "\n" + "a,m1,0,0.01\n")
    msg = _error(path)
    # the blank line is skipped, and the duplicate is reported on its real line (5)
    assert str(path) in msg and "line 5" in msg and "duplicate (sample_id, model) = ('a', 'm1')" in msg


def test_unknown_model_in_price_table(tmp_path):
    path = _write(
        tmp_path,
        "o.csv",
        "sample_id,model,score,input_tokens,output_tokens\n"
        "a,gpt-4o-2024-05-13,1,10,10\na,gpt4o-mini,1,10,10\n",
    )
    msg = _error(path)
    assert str(path) in msg and "line 3" in msg and "column 'model'" in msg
    assert "'gpt4o-mini' is not in the price table" in msg and "did you mean" in msg


def test_empty_table(tmp_path):
    assert "empty file" in _error(_write(tmp_path, "empty.csv", ""))
    msg = _error(_write(tmp_path, "header_only.csv", HEADER))
    assert "header_only.csv" in msg and "no data rows" in msg
    assert "no data rows" in _error(_write(tmp_path, "blank.jsonl", "\n\n"))


def test_non_utf8_text(tmp_path):
    data = (HEADER + "a,m1,1,0.01\n").encode() + "a,café,0,0.001\n".encode("latin-1")
    path = _write(tmp_path, "o.csv", data)
    msg = _error(path)
    offset = data.index(b"\xe9")
    assert str(path) in msg and f"byte offset {offset}" in msg and "line 3" in msg and "UTF-8" in msg


def test_malformed_jsonl_line(tmp_path):
    path = _write(
        tmp_path, "o.jsonl", '{"sample_id": "a", "model": "m", "score": 1, "cost_usd": 0}\n{"sample_id": \n'
    )
    msg = _error(path)
    assert str(path) in msg and "line 2" in msg and "malformed JSON" in msg and "column" in msg


def test_per_sample_column_disagrees(tmp_path):
    path = _write(
        tmp_path, "o.csv", "sample_id,prompt,model,score,cost_usd\na,hi,m1,1,0.1\na,hello,m2,1,0.1\n"
    )
    msg = _error(path)
    assert str(path) in msg and "line 3" in msg and "'prompt' differs between rows of sample_id 'a'" in msg


def test_data_folder_that_does_not_exist(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(DataNotFoundError, match=f"data folder '{missing}'.*does not exist"):
        sources.load("mmlu-pro", data_dir=missing)


def test_source_folder_missing_in_data_folder(tmp_path):
    with pytest.raises(DataNotFoundError, match="source folder .*routerbench-mbpp.* does not exist"):
        sources.load("routerbench-mbpp", data_dir=tmp_path)
    (tmp_path / "routerbench-mbpp").mkdir()
    with pytest.raises(DataNotFoundError, match="no file matches 'mbpp_train.csv'"):
        sources.load("routerbench-mbpp", data_dir=tmp_path)


def test_outcome_file_that_does_not_exist_or_has_unknown_type(tmp_path):
    with pytest.raises(DataNotFoundError, match="nope.csv"):
        sources.load(str(tmp_path / "nope.csv"))
    path = _write(tmp_path, "o.txt", HEADER + GOOD)
    with pytest.raises(SchemaError, match=r"o.txt: unknown outcome file type '.txt'"):
        sources.load(str(path))


def test_wide_table_bad_score_names_line_and_column(tmp_path):
    path = _write(tmp_path, "wide.csv", "sample_id,prompt,m1,m1|total_cost\na,hi,1,0.1\nb,yo,yes,0.1\n")
    with pytest.raises(SchemaError) as info:
        routerbench.read_wide(path)
    msg = str(info.value)
    assert str(path) in msg and "line 3" in msg and "column 'm1'" in msg and "'yes'" in msg


def test_wide_table_score_out_of_range_names_line_and_model(tmp_path):
    path = _write(tmp_path, "wide.csv", "sample_id,m1,m1|total_cost\na,1,0.1\nb,2,0.1\n")
    with pytest.raises(SchemaError, match=r"line 3 \(model 'm1'\).*'score' is 2.0"):
        routerbench.read_wide(path)


def test_cli_bad_input_is_one_clean_line(tmp_path, capsys):
    path = _write(tmp_path, "o.csv", HEADER + "a,m1,7,0.01\n")
    assert main(["datasets", "show", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("routelab: error:") and "Traceback" not in err
    assert "line 2" in err and "'score' is 7.0" in err
