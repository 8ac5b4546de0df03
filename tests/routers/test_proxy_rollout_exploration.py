"""Staged rollout ([rollout]) and epsilon exploration ([exploration]) in the proxy: arm shares and stickiness,
exploration frequencies, and propensities that match their definition (evals.production.propensity) in the log.

Real proxy and replay server on loopback; decisions read back from the decision log.
"""

from __future__ import annotations

import socket
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest

from evals.exceptions import ConfigError
from evals.production.log_reader import read_log
from evals.production.offpolicy import LoggedDecisions
from routers import make_router
from routers.export import export_router, load_exported
from routers.export.proxy import ProxyServer, build_proxy_app
from routers.export.settings.exploration import DEFAULT_EPSILON

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import PRICES, point_upstreams  # noqa: E402
from proxy_helpers import ENV, LAM, chat, client, make_folder  # noqa: E402


def add_sections(folder: Path, text: str) -> None:
    """Append sections to a folder's upstreams.toml (what an owner does)."""
    path = folder / "upstreams.toml"
    path.write_text(path.read_text() + "\n" + text.strip() + "\n")


@contextmanager
def serving(folder: Path):
    app = build_proxy_app(folder, environ=ENV)
    with ProxyServer(app) as srv:
        yield srv, app.state.proxy


def logged(srv_state, log_dir: Path):
    assert srv_state.decision_log.flush()
    result = read_log(log_dir)
    assert not result.errors, result.summary()
    return {r.request_id: r for r in result.records}


@pytest.mark.slow  # a few hundred requests, for the frequencies
def test_exploration_frequencies_and_propensities_match_their_definition(replay, table, tmp_path):
    eps = 0.3
    folder = make_folder(table, replay.base_url, tmp_path)
    log_dir = tmp_path / "logs"
    add_sections(folder, f'[log]\ndir = "{log_dir}"\n[exploration]\nepsilon = {eps}\nseed = 11')
    exported = load_exported(folder)
    prompts = list(table.prompts) * 5  # 300 requests
    with serving(folder) as (srv, st), client(srv.base_url) as c:
        answers = [chat(c, p) for p in prompts]
        records = logged(st, log_dir)
    assert all(r.status_code == 200 for r in answers)
    n, m = len(prompts), len(exported.models)
    explored = [records[r.headers["x-routelab-request-id"]] for r in answers
                if records[r.headers["x-routelab-request-id"]].explored]
    # Explored share: binomial(300, 0.3) has sd 7.9; 4 sd either side.
    assert abs(len(explored) - eps * n) < 4 * (n * eps * (1 - eps)) ** 0.5, len(explored)
    # An explored request picks each model uniformly (each share near 1/3 of the explored ones).
    picks = Counter(r.chosen for r in explored)
    assert set(picks) == set(exported.models) and min(picks.values()) > len(explored) / m / 2, picks
    for p, r in zip(prompts, answers, strict=True):
        rec = records[r.headers["x-routelab-request-id"]]
        greedy = exported.route(p)[0]
        assert rec.chosen == r.headers["x-routelab-choice"] and rec.epsilon == eps
        if not rec.explored:
            assert rec.chosen == greedy
        # (1 - eps) * [chosen == greedy] + eps / n_eligible, every model eligible here.
        assert rec.propensity == pytest.approx((1 - eps) * (rec.chosen == greedy) + eps / m, rel=1e-12)
    # The off-policy reader recomputes each propensity from the logged candidates, lam and epsilon: all agree.
    decisions, skipped = LoggedDecisions.from_records(records.values())
    assert len(decisions) == n and not skipped


def test_exploration_is_off_without_a_log_and_on_by_default_with_one(replay, table, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    with serving(folder) as (srv, st):
        assert st.policy_steps == [] and not st.wants_predictions  # the plain request path, unchanged
    log_dir = tmp_path / "logs"
    add_sections(folder, f'[log]\ndir = "{log_dir}"')
    with serving(folder) as (srv, st), client(srv.base_url) as c:
        ids = [chat(c, p).headers["x-routelab-request-id"] for p in table.prompts[:10]]
        records = logged(st, log_dir)
    assert {records[i].epsilon for i in ids} == {DEFAULT_EPSILON}
    path = folder / "upstreams.toml"
    path.write_text(path.read_text() + "[exploration]\nepsilon = 0\n")
    with serving(folder) as (srv, st), client(srv.base_url) as c:
        ids = [chat(c, p).headers["x-routelab-request-id"] for p in table.prompts]
        records = logged(st, log_dir)
    assert all(records[i].epsilon == 0 and records[i].propensity == 1.0 and not records[i].explored for i in ids)


def _dead_url() -> str:
    with socket.socket() as s:  # a port nobody listens on: connections are refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_a_model_whose_circuit_is_open_is_logged_ineligible_and_never_chosen(replay, table, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    exported = load_exported(folder)
    point_upstreams(folder, {"big": _dead_url()}, retries=0, cooldown_s=600)
    log_dir = tmp_path / "logs"
    add_sections(folder, f'[log]\ndir = "{log_dir}"\n[exploration]\nepsilon = 0.2\nseed = 3')
    big_prompts = [p for p in table.prompts if exported.route(p)[0] == "big"]
    assert len(big_prompts) >= 5
    with serving(folder) as (srv, st), client(srv.base_url) as c:
        first = chat(c, big_prompts[0])  # big fails once: its circuit opens
        assert first.status_code == 200 and first.headers["x-routelab-reason"].startswith("fallback")
        later = [chat(c, p) for p in big_prompts[1:] * 4]
        records = logged(st, log_dir)
    assert all(r.status_code == 200 for r in later)
    for r in later:
        rec = records[r.headers["x-routelab-request-id"]]
        eligible = {cand.model: cand.eligible for cand in rec.candidates}
        assert eligible == {"cheap": True, "mid": True, "big": False}
        assert rec.chosen != "big" and rec.answered_by == rec.chosen and rec.reason == "routed"
        assert rec.propensity in (pytest.approx(0.8 + 0.1), pytest.approx(0.1))  # two eligible models
    decisions, skipped = LoggedDecisions.from_records(records.values())
    assert not skipped.get("propensity_mismatch")


@pytest.mark.slow  # a few hundred requests, for the frequencies
def test_rollout_sends_its_share_to_the_router_and_the_rest_to_control(replay, table, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    log_dir = tmp_path / "logs"
    add_sections(folder, f'[log]\ndir = "{log_dir}"\n[rollout]\nshare = 0.3\ncontrol = "mid"\n'
                         "[exploration]\nepsilon = 0.1")
    prompts = list(table.prompts) * 5
    with serving(folder) as (srv, st), client(srv.base_url) as c:
        answers = [chat(c, p) for p in prompts]
        records = logged(st, log_dir)
        health = c.get(srv.base_url.replace("/v1", "/healthz")).json()
    assert health["rollout"]["share"] == 0.3 and health["rollout"]["control"] == "mid"
    assert health["exploration"] == {"epsilon": 0.1}
    arms = Counter(r.headers["x-routelab-arm"] for r in answers)
    n = len(prompts)
    assert abs(arms["router"] - 0.3 * n) < 4 * (n * 0.3 * 0.7) ** 0.5, arms
    for r in answers:
        rec = records[r.headers["x-routelab-request-id"]]
        assert rec.arm == r.headers["x-routelab-arm"]
        if rec.arm == "control":
            assert (rec.chosen, rec.answered_by, rec.propensity, rec.epsilon, rec.lam) == ("mid", "mid", 1.0, 0.0, None)
            assert not rec.explored
        else:
            assert rec.epsilon == 0.1 and rec.lam == LAM
    decisions, skipped = LoggedDecisions.from_records(records.values())
    assert skipped == Counter({"control_arm": arms["control"]}) and len(decisions) == arms["router"]


@pytest.mark.slow  # a few hundred requests, for the frequencies
def test_rollout_is_sticky_per_session_header_or_user(replay, table, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    add_sections(folder, '[rollout]\nshare = 0.5\ncontrol = "big"\nsticky_header = "X-Team"')
    with serving(folder) as (srv, st), client(srv.base_url) as c:
        by_header: dict[str, set[str]] = {}
        by_user: dict[str, set[str]] = {}
        for s in range(40):
            for p in table.prompts[s % 10 :: 20]:
                r = c.post("/chat/completions", headers={"x-team": f"team-{s}"},
                           json={"model": "router", "messages": [{"role": "user", "content": p}]})
                by_header.setdefault(f"team-{s}", set()).add(r.headers["x-routelab-arm"])
                u = chat(c, p, user=f"user-{s}")
                by_user.setdefault(f"user-{s}", set()).add(u.headers["x-routelab-arm"])
                if u.headers["x-routelab-arm"] == "control":
                    assert u.headers["x-routelab-model"] == "big"
    for arms in (by_header, by_user):
        assert all(len(a) == 1 for a in arms.values()), arms  # each session keeps its arm
        in_router = sum(a == {"router"} for a in arms.values())
        assert 8 <= in_router <= 32, in_router  # binomial(40, 0.5): 4 sd either side


def test_rollout_control_defaults_to_the_exports_best_single_model(replay, table, tmp_path):
    router = make_router({"name": "knn", "params": {"encoder": "hash-bow-256", "k": 3}}).fit(table)
    folder = export_router(router, tmp_path / "export", lam=LAM, prices=PRICES,
                           measurement={"reference_model": "big"})
    point_upstreams(folder, {m: replay.base_url for m in table.models})
    add_sections(folder, "[rollout]\nshare = 0")
    with serving(folder) as (srv, st), client(srv.base_url) as c:
        answers = [chat(c, p) for p in table.prompts[:10]]
    assert {(r.headers["x-routelab-arm"], r.headers["x-routelab-model"]) for r in answers} == {("control", "big")}


def test_rollout_and_exploration_config_errors_name_the_section_and_the_key(replay, table, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)  # exported without a measurement
    original = (folder / "upstreams.toml").read_text()
    cases = [
        ("[rollout]\ncontrol = \"big\"", "[rollout]: share is required"),
        ("[rollout]\nshare = 1.5", "[rollout]: share must be a number from 0 to 1"),
        ("[rollout]\nshare = 0.5\ncontrol = \"huge\"", "[rollout]: control 'huge' is not one of the export's models"),
        ("[rollout]\nshare = 0.5\nsticky_header = \"x team\"", "[rollout]: sticky_header must be an HTTP header"),
        ("[rollout]\nshare = 0.5\nstick = 1", "[rollout]: unknown key(s) ['stick']"),
        ("[rollout]\nshare = 0.5", "[rollout] control is not set and the export records no best single model"),
        ("[exploration]\nepsilon = 1.2", "[exploration]: epsilon must be a number from 0 to 1"),
        ("[exploration]\nepsilon = true", "[exploration]: epsilon must be a number"),
        ("[exploration]\nrate = 0.1", "[exploration]: unknown key(s) ['rate']"),
    ]
    for section, message in cases:
        (folder / "upstreams.toml").write_text(original + "\n" + section + "\n")
        with pytest.raises(ConfigError) as err:
            build_proxy_app(folder, environ=ENV)
        assert message in str(err.value), (section, str(err.value))


def test_no_arm_header_without_a_rollout(replay, table, tmp_path):
    folder = make_folder(table, replay.base_url, tmp_path)
    with serving(folder) as (srv, _), client(srv.base_url) as c:
        r = chat(c, table.prompts[0])
    assert r.status_code == 200 and "x-routelab-arm" not in r.headers
