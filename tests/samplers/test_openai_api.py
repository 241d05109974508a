"""`OpenAISampler` against a real vLLM OpenAI-compatible server (`vllm_server`, the bundled model): it
conforms, scores and decodes greedily as `HFSampler` on the same weights, draws from the same law
(χ² two-sample tests with power), keeps seeds apart, refuses bad input in one line, re-sends nothing a
disk cache holds, retries transient errors, and turns a killed server into Failure rows.

t counts response tokens removed from the end. Sizes: 2000 one-token draws per law (a cell with expected
count < 5 is pooled into "other"); accept at p > 1e-3, and the power check rejects T = 1.0 against
T = 0.6 at p < 1e-6 (fixed seeds, so outcomes are deterministic).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from _servers import free_port
from scipy import stats

import critwin
from critwin.conformance import check_sampler
from critwin.errors import CritwinError
from critwin.samplers import load_sampler
from critwin.samplers.lm import Continuation
from critwin.samplers.openai_api import OpenAISampler, from_registry
from critwin.types import Failure

pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.xdist_group("vllm_server")]

PROBLEMS = Path(critwin.__file__).resolve().parent / "assets" / "reasoning_problems.jsonl"
QUESTIONS = [json.loads(line)["question"] for line in PROBLEMS.read_text().splitlines()[:4]]
N_DIST = 2000
TEMP, TOP_P = 0.6, 0.9


@pytest.fixture
def server(vllm_server):
    """The shared server, held for this test."""
    with vllm_server.in_use() as s:
        yield s


@pytest.fixture(scope="module")
def model_dir(vllm_server):
    return vllm_server.model_dir


@pytest.fixture(scope="module")
def hf(model_dir):
    from critwin.samplers.hf import HFSampler

    return HFSampler.from_pretrained(model_dir, temperature=TEMP, top_p=TOP_P, max_new_tokens=80)


def api(server, model_dir, **kw) -> OpenAISampler:
    kw.setdefault("temperature", TEMP)
    kw.setdefault("top_p", TOP_P)
    kw.setdefault("max_new_tokens", 80)
    return from_registry(server.base_url, model=str(model_dir), **kw)


@pytest.fixture(scope="module")
def x(hf):
    """A short greedy original response to a bundled problem."""
    return hf.generate_responses([QUESTIONS[0]], temperature=0.0, max_new_tokens=40)[0]


def nucleus(logits: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    p = np.exp((logits - logits.max()) / temperature)
    p /= p.sum()
    order = np.argsort(-p)
    keep = (np.cumsum(p[order]) - p[order]) < top_p
    q = np.zeros_like(p)
    q[order[keep]] = p[order[keep]]
    return q / q.sum()


@pytest.fixture(scope="module")
def cut(hf, x):
    """The cut t of x whose next-token law changes most between T = 0.6 and T = 1.0 (top-p 0.9)."""
    ts = list(range(x.length + 1))
    logits = hf.next_token_logits(x, ts).double().numpy()
    tv = [0.5 * np.abs(nucleus(row, TEMP, TOP_P) - nucleus(row, 1.0, TOP_P)).sum() for row in logits]
    return ts[int(np.argmax(tv))]


def first_tokens(conts) -> list:
    return [c.token_ids[0] if c.token_ids else c.stop_reason for c in conts]


def two_sample_p(a: list, b: list) -> float:
    """χ² two-sample test of two categorical samples, pooling cells with expected count < 5."""
    ca, cb = Counter(a), Counter(b)
    cats = sorted(set(ca) | set(cb), key=str)
    table = np.array([[ca[c] for c in cats], [cb[c] for c in cats]], dtype=float)
    expected = table.sum(0) * table.sum(1, keepdims=True).min() / table.sum()
    rare = expected < 5
    pooled = np.column_stack([table[:, ~rare], table[:, rare].sum(1)]) if rare.any() else table
    pooled = pooled[:, pooled.sum(0) > 0]
    if pooled.shape[1] < 2:
        return 1.0
    return float(stats.chi2_contingency(pooled)[1])


# ----------------------------------------------------------------------------------------------------------
def test_conforms_and_registers(server, model_dir):
    s = load_sampler("openai", server.base_url + "/v1", model=str(model_dir), max_new_tokens=24,
                     temperature=1.0, top_p=1.0)
    assert isinstance(s, OpenAISampler) and s.base_url == server.base_url
    notes = check_sampler(s, n=100, seed=0)
    assert all(v == "ok" for v in notes.values()), notes
    greedy = check_sampler(api(server, model_dir, max_new_tokens=16, temperature=0.0), n=16)
    assert greedy["seed_changes"].startswith("skipped: greedy")
    info = s.engine_info()
    assert info["engine"] == "openai" and info["version"] and info["token_prompts"] is True
    assert info["stats"]["requests_sent"] > 0 and info["stats"]["failed_requests"] == 0
    json.dumps(info)
    assert s.context_length == 512 and s.vocab_size == len(s.tokenizer) and s.model_name == str(model_dir)


def test_score_matches_hf(server, model_dir, hf, x):
    s = api(server, model_dir)
    rng = np.random.default_rng(0)
    prompts = [x.prompt_ids, x.prompt_ids, x.prompt_ids[:3], [1]]
    comps = [x.response_ids, x.response_ids[:5], rng.integers(5, s.vocab_size, 40).tolist(),
             rng.integers(0, s.vocab_size, 20).tolist()]
    got, want = s.score(prompts, comps), hf.score(prompts, comps)
    for g, w, c in zip(got, want, comps, strict=True):
        assert g.dtype == np.float64 and g.shape == (len(c),)
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=0)
    text = api(server, model_dir, token_prompts=False)
    assert text.token_prompts is False
    np.testing.assert_allclose(np.concatenate(text.score(prompts, comps)), np.concatenate(want), atol=1e-4)
    assert s.score([], []) == []
    with pytest.raises(CritwinError, match="outside the model's vocabulary"):
        s.score([[1]], [[s.vocab_size]])


def test_greedy_matches_hf(server, model_dir, hf, x):
    s = api(server, model_dir, temperature=0.0)
    h = hf.with_settings(temperature=0.0)
    for a, b in zip(s.generate_responses(QUESTIONS), h.generate_responses(QUESTIONS), strict=True):
        assert (a.response_ids, a.stop_reason) == (b.response_ids, b.stop_reason)
    ts = [0, 5, x.length // 2, x.length]
    assert s.resample(x, ts, 3, 0) == h.resample(x, ts, 3, 0)
    # A stop string that spans the cut (its first character kept, its second new) is found as HFSampler
    # finds it: greedy continuations of the greedy x repeat x, so the stop string is x's tokens k-1, k.
    k = next(k for k in range(2, x.length) if s.decode(x.response_ids[k - 1 : k + 1])
             not in s.decode(x.response_ids[:k]) and len(s.decode(x.response_ids[k - 1 : k + 1])) == 2)
    t = x.length - k
    kw = dict(stop_strings=(s.decode(x.response_ids[k - 1 : k + 1]),), budget="continuation")
    got = s.with_settings(**kw).resample(x, [t, 0], 1, 0)
    want = h.with_settings(**kw).resample(x, [t, 0], 1, 0)
    assert got == want and got[0][0].stop_reason == "stop_string" and len(got[0][0].token_ids) == 1
    text = api(server, model_dir, temperature=0.0, token_prompts=False)
    assert text.resample(x, ts, 1, 0) == h.resample(x, ts, 1, 0)


def test_same_law_as_hf_with_power(server, model_dir, hf, x, cut):
    one = dict(max_new_tokens=1, budget="continuation")
    s = api(server, model_dir).with_settings(**one)
    a = first_tokens(s.resample(x, [cut], N_DIST, 1)[0])
    b = first_tokens(hf.with_settings(**one).resample(x, [cut], N_DIST, 2)[0])
    hot = first_tokens(hf.with_settings(temperature=1.0, **one).resample(x, [cut], N_DIST, 3)[0])
    assert len(set(a)) >= 2, "the cut must leave the next token uncertain"
    assert two_sample_p(a, b) > 1e-3
    assert two_sample_p(a, hot) < 1e-6


def test_seed_streams_are_disjoint_and_reproducible(server, model_dir, x, cut):
    s = api(server, model_dir, temperature=1.0, top_p=1.0, max_new_tokens=80)
    out = s.resample_many([x, x], [[cut], [cut]], 16, np.random.default_rng(7))
    a, b = out[0][0], out[1][0]
    assert len(a) == len(b) == 16 and all(isinstance(c, Continuation) for c in a + b)
    assert a != b and a[1:] != b[:-1] and a[:-1] != b[1:]  # two cuts never share (shifted) streams
    again = s.resample_many([x, x], [[cut], [cut]], 16, np.random.default_rng(7))
    assert again == out
    assert s.resample_many([x, x], [[cut], [cut]], 16, np.random.default_rng(8)) != out
    # A run longer than one request (MAX_N) is split, its parts seeded apart.
    big = s.with_settings(max_new_tokens=8, budget="continuation").resample(x, [cut], 300, 0)[0]
    assert len(big) == 300 and len(set(big)) > 1 and big[256:] != big[: 300 - 256]


def test_bad_input_is_one_line(server, model_dir, tmp_path):
    def one_line(match, fn, *args, **kw):
        with pytest.raises(CritwinError, match=match) as err:
            fn(*args, **kw)
        assert "\n" not in str(err.value)
        return str(err.value)

    one_line("cannot reach", from_registry, f"http://127.0.0.1:{free_port()}", model=str(model_dir))
    one_line("scheme", from_registry, "127.0.0.1:8000", model=str(model_dir))
    one_line("needs the server's base URL", from_registry, None)
    one_line("unknown setting 'temprature'", from_registry, server.base_url, temprature=1.0)
    msg = one_line("served_model='nope'", from_registry, server.base_url, model=str(model_dir),
                   served_model="nope")
    assert str(model_dir) in msg  # lists what the server serves
    one_line("not set", from_registry, server.base_url, model=str(model_dir),
             api_key_env="CRITWIN_NO_SUCH_KEY")
    one_line("max_concurrency", from_registry, server.base_url, model=str(model_dir), max_concurrency=0)
    # A tokenizer with two ids swapped, and one with an id the server does not have.
    swapped = tmp_path / "swapped"
    shutil.copytree(model_dir, swapped, ignore=shutil.ignore_patterns("*.safetensors"))
    tok = json.loads((swapped / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    (swapped / "tokenizer.json").write_text(json.dumps(tok))
    one_line("does not match the model", from_registry, server.base_url, model=str(swapped))
    from critwin.samplers.tokenized import _checked_tokenizer

    bigger = _checked_tokenizer(Path(model_dir), "--model")
    bigger.add_tokens(["<|extra|>"], special_tokens=True)
    one_line("refuses token id", OpenAISampler, server.base_url, bigger)


def test_sentence_anchors_and_revise_run_through_the_server(server, model_dir, tmp_path):
    """`critwin anchors --revise --engine openai`: the methods draw through any engine; each sentence's
    importance follows from its two cuts' counts and every revise arm holds its K endings."""
    from critwin.cli import main
    from critwin.experiments import reasoning as R

    out = tmp_path / "anchors"
    with pytest.raises(SystemExit) as done:
        main(["anchors", "--engine", "openai", "--base-url", server.base_url, "--model", str(model_dir),
              "--limit", "2", "-k", "4", "--no-counterfactual", "--revise", "--out", str(out),
              "--no-progress", "--json"])
    assert done.value.code in (0, None)
    records = R.read_records(out)
    assert [r["status"] for r in records] == ["ok", "ok"]
    for r in records:
        c = r["curve"]
        by_kept = {k: (s, n) for k, s, n in zip(c["kept"], c["n_kept"], c["n_valid"], strict=True)}
        for a in r["anchors"]:
            (s0, n0), (s1, n1) = by_kept[a["kept_lo"]], by_kept[a["kept_hi"]]
            assert a["importance"] == pytest.approx(s1 / n1 - s0 / n0)
        rv = r["revise"]
        assert "skipped" in rv or all(len(e) == 4 for e in rv["endings"].values())


def test_disk_cache_resends_nothing(server, model_dir, x, tmp_path):
    kw = dict(temperature=1.0, cache_dir=tmp_path / "cache", max_new_tokens=60)
    first = api(server, model_dir, **kw)
    draws = first.resample(x, [0, 10, x.length], 6, 5)
    responses = first.generate_responses(QUESTIONS[:2], seed=3)
    scores = first.score([x.prompt_ids], [x.response_ids])
    sent = first.stats["requests_sent"]
    assert sent == 3 + 2 + 1 and first.stats["cache_hits"] == 0  # one request per cut, prompt, score
    resumed = api(server, model_dir, **kw)
    assert resumed.resample(x, [0, 10, x.length], 6, 5) == draws
    assert resumed.generate_responses(QUESTIONS[:2], seed=3) == responses
    np.testing.assert_array_equal(resumed.score([x.prompt_ids], [x.response_ids])[0], scores[0])
    assert resumed.stats["requests_sent"] == 0 and resumed.stats["cache_hits"] == sent
    assert resumed.resample(x, [10], 6, 6) != draws[1:2]  # another seed is another request
    assert resumed.stats["requests_sent"] == 1
    files = list((tmp_path / "cache").rglob("*.json"))
    assert len(files) == sent + 1 and not list((tmp_path / "cache").rglob("*.tmp"))


class _Proxy:
    """A real HTTP hop in front of the server that can act like a server with fewer features: it answers
    the next `fail` POSTs with `status` (and a Retry-After header), and optionally has no /tokenize,
    refuses max_tokens=0, drops `seed`, forces n=1 or strips token ids from its answers."""

    def __init__(self, target: str, *, status: int = 503, retry_after: float | None = None,
                 no_tokenize=False, refuse_zero=False, drop_seed=False, force_n1=False, strip_ids=False):
        import httpx

        self.fail, outer = 0, self

        def handle(method: str, path: str, raw: bytes) -> tuple[int, bytes, dict]:
            busy = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            if method == "POST" and outer.fail > 0:
                outer.fail -= 1
                return status, b'{"error": {"message": "busy or refused"}}', busy
            if no_tokenize and path == "/tokenize":
                return 404, b'{"detail": "Not Found"}', {}
            body = json.loads(raw) if raw else None
            if isinstance(body, dict):
                if refuse_zero and body.get("max_tokens") == 0:
                    return 400, b'{"error": {"message": "max_tokens must be at least 1"}}', {}
                if drop_seed:
                    body.pop("seed", None)
                if force_n1 and "n" in body:
                    body["n"] = 1
            r = httpx.request(method, target + path, json=body, timeout=60)
            data = r.content
            if strip_ids and r.status_code == 200 and path == "/v1/completions":
                answer = r.json()
                for c in answer.get("choices", []):
                    c.pop("token_ids", None)
                    c.pop("prompt_token_ids", None)
                data = json.dumps(answer).encode()
            return r.status_code, data, {}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, method):
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                code, data, extra = handle(method, self.path, raw)
                self.send_response(code)
                for k, v in {"Content-Type": "application/json", **extra}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._reply("GET")

            def do_POST(self):
                self._reply("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("status", [429, 503])
def test_retries_transient_errors_honouring_retry_after(server, model_dir, x, status):
    kw = dict(model=str(model_dir), temperature=1.0, max_new_tokens=20, budget="continuation")
    with _Proxy(server.base_url, status=status, retry_after=2) as proxy:
        s = from_registry(proxy.url, **kw)
        s.resample(x, [x.length], 2, 0)  # the seed check is done
        proxy.fail = 2
        start = time.monotonic()
        got = s.resample(x, [5, x.length], 4, 9)
        assert time.monotonic() - start >= 2.0  # waited as told, not the shorter default back-off
        assert s.stats["retries"] == 2 and s.stats["failed_requests"] == 0
        assert got == from_registry(server.base_url, **kw).resample(x, [5, x.length], 4, 9)
        fails = from_registry(proxy.url, model=str(model_dir), temperature=0.0, retries=1)
        proxy.fail = 10**6
        failed = fails.resample(x, [5], 2, 0)[0]
        assert all(isinstance(c, Failure) and str(status) in c.reason for c in failed)


def test_refused_key_is_an_error_and_the_key_is_never_kept(server, model_dir, x, tmp_path, monkeypatch):
    monkeypatch.setenv("CRITWIN_TEST_KEY", "sk-very-secret")
    with _Proxy(server.base_url, status=401) as proxy:
        s = from_registry(proxy.url, model=str(model_dir), api_key_env="CRITWIN_TEST_KEY", temperature=1.0,
                          cache_dir=tmp_path, budget="continuation")
        assert all(isinstance(c, Continuation) for c in s.resample(x, [3], 2, 0)[0])
        proxy.fail = 1
        with pytest.raises(CritwinError, match="api_key_env") as err:
            s.resample(x, [4], 2, 0)
        assert "\n" not in str(err.value) and "sk-very-secret" not in str(err.value)
    kept = repr(s) + json.dumps(s.engine_info()) + repr(vars(s).get("stats")) + repr(
        {k: v for k, v in vars(s).items() if k != "tokenizer"})
    kept += "".join(f.read_text() for f in tmp_path.rglob("*.json"))
    assert "sk-very-secret" not in kept


def test_servers_without_vllm_extras(server, model_dir, hf, x, tmp_path):
    """No /tokenize (the echo check instead), no max_tokens=0 (score drops the extra token), no token ids
    in answers (re-tokenized text): still HF's greedy tokens and scores."""
    h = hf.with_settings(temperature=0.0)
    with _Proxy(server.base_url, no_tokenize=True, refuse_zero=True, strip_ids=True) as proxy:
        s = from_registry(proxy.url, model=str(model_dir), temperature=0.0)
        assert s.resample(x, [0, 7, x.length], 1, 0) == h.resample(x, [0, 7, x.length], 1, 0)
        assert s.token_ids_from_text
        np.testing.assert_allclose(s.score([x.prompt_ids], [x.response_ids])[0],
                                   hf.score([x.prompt_ids], [x.response_ids])[0], atol=1e-4)
        assert s._score_max_tokens == 1
        swapped = tmp_path / "swapped"
        shutil.copytree(model_dir, swapped, ignore=shutil.ignore_patterns("*.safetensors"))
        tok = json.loads((swapped / "tokenizer.json").read_text())
        vocab = tok["model"]["vocab"]
        vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
        (swapped / "tokenizer.json").write_text(json.dumps(tok))
        with pytest.raises(CritwinError, match="does not match the model"):
            from_registry(proxy.url, model=str(swapped))


@pytest.mark.parametrize(("quirk", "message"), [("drop_seed", "server ignores seed"),
                                                ("force_n1", "server ignores n")])
def test_server_ignoring_seed_or_n_is_refused(server, model_dir, x, quirk, message):
    with _Proxy(server.base_url, **{quirk: True}) as proxy:
        s = from_registry(proxy.url, model=str(model_dir), temperature=1.0, budget="continuation")
        with pytest.raises(CritwinError, match=message) as err:
            s.resample(x, [3], 4, 0)
        assert "\n" not in str(err.value)
        assert s.with_settings(temperature=0.0).resample(x, [3], 2, 0)[0][0].token_ids  # greedy needs neither


def test_killed_server_gives_failure_rows(vllm_server, model_dir, x):
    """Last in the file: it kills the shared server (the next user, if any, starts a fresh one)."""
    with vllm_server.exclusive() as srv:
        s = api(srv, model_dir, temperature=1.0, top_p=1.0, max_new_tokens=200, budget="continuation",
                retries=1, timeout=5.0, max_concurrency=2)
        assert all(isinstance(c, Continuation) for c in s.resample(x, [3], 4, 0)[0])
        killer = threading.Timer(1.0, lambda: os.killpg(srv.pid, signal.SIGKILL))
        killer.start()
        try:
            mid = s.resample(x, list(range(0, x.length, 2)), 32, 1)  # runs past the kill
        finally:
            killer.join()
        flat = [c for row in mid for c in row]
        assert len(flat) == 32 * len(range(0, x.length, 2))
        assert all(isinstance(c, Continuation | Failure) for c in flat)
        assert any(isinstance(c, Failure) for c in flat)
        after = s.resample_many([x, x], [[1, 2], [3]], 3, 2)
        assert all(isinstance(c, Failure) and "attempts" in c.reason for m in after for r in m for c in r)
        assert s.stats["failed_requests"] >= 3
        with pytest.raises(CritwinError, match="score:"):
            s.score([x.prompt_ids], [x.response_ids])
        srv.stop(grace=2)  # reap what is left of the group
