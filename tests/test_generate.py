"""The generation worker, for real: a subprocess, tiny trained runs, streamed tokens.

Streaming order, seeded determinism (the worker reproduces the training's
own ``sample`` events), adapters swapped on one loaded base, per-pane errors,
cancellation, and a killed worker reported in its panes instead of a hang.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from trained_runs import PROMPT, quiet_env, trained_runs

from workbench import runs
from workbench.generate import client as gen
from workbench.generate.worker import TokenStream

SETTINGS = {"temperature": 1.0, "top_p": 0.9, "max_new_tokens": 12, "seed": 1234}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_llama_dir):
    return trained_runs(tmp_path_factory, tiny_llama_dir)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    c = gen.GenerationClient(env=quiet_env(tmp_path_factory.mktemp("gen-cache")))
    yield c
    c.close()


def run_dir(trained, name: str):
    return trained[1][name].path


def test_tokens_stream_before_done_and_join_to_the_run_s_own_sample(trained, client):
    a = run_dir(trained, "a")
    request = client.generate([gen.run_pane("p1", a)], PROMPT, **SETTINGS)
    messages = list(request)
    kinds = [("token" if "token" in m else "done" if m.get("done") else "end" if m.get("end") else "other")
             for m in messages]
    assert kinds[-1] == "end"
    done = next(m for m in messages if m.get("done"))
    tokens = [m["token"] for m in messages if "token" in m]
    assert len(tokens) >= 2, "streamed token by token, not in one piece"
    assert kinds.index("done") > max(i for i, k in enumerate(kinds) if k == "token")
    assert "".join(tokens) == done["text"]
    # Same seed and settings as the training's samples evaluator: the very same text.
    final = [e for e in runs.read_events(a) if e.get("type") == "sample" and e.get("checkpoint") == "final"]
    assert final and final[0]["seed"] == SETTINGS["seed"]
    assert done["text"] == final[0]["text"]


def test_same_seed_same_text(trained, client):
    panes = [gen.run_pane("p1", run_dir(trained, "b"))]
    first = client.generate(panes, PROMPT, **{**SETTINGS, "seed": 7}, n=2).results()["p1"].texts
    again = client.generate(panes, PROMPT, **{**SETTINGS, "seed": 7}, n=2).results()["p1"].texts
    other = client.generate(panes, PROMPT, **{**SETTINGS, "seed": 8}, n=2).results()["p1"].texts
    assert len(first) == 2 and first == again
    assert first[1] == other[0], "sample i is seeded with seed + i"
    assert first != other


def test_adapters_swap_on_one_base_loaded_once(trained, client):
    a, b = run_dir(trained, "a"), run_dir(trained, "b")
    base = gen.run_base(a)
    panes = [
        {"pane": "base", "base": {k: base[k] for k in ("backend", "model", "plugins_dir", "precision")}},
        gen.run_pane("a", a), gen.run_pane("b", b), gen.run_pane("a2", a, "checkpoint-2"),
    ]
    results = client.generate(panes, PROMPT, **SETTINGS).results()
    texts = {pane: r.texts[0] for pane, r in results.items()}
    assert all(r.error is None for r in results.values()), results
    assert texts["a"] != texts["base"] and texts["b"] != texts["base"] and texts["a"] != texts["b"]
    again = client.generate(panes, PROMPT, **SETTINGS).results()
    assert {pane: r.texts[0] for pane, r in again.items()} == texts, "switching adapters leaks nothing"
    stats = client.stats()
    assert list(stats["base_loads"].values()) == [1], stats
    assert sorted(stats["adapter_loads"].values()) == [1, 1, 1], stats


def test_one_bad_pane_fails_alone(trained, client):
    a = run_dir(trained, "a")
    panes = [gen.run_pane("missing", a, "checkpoint-99"), {"pane": "nope", "base": {"backend": "nope"}},
             gen.run_pane("ok", a)]
    results = client.generate(panes, PROMPT, **SETTINGS).results()
    assert "no LoRA adapter" in results["missing"].error
    assert "unknown backend 'nope'" in results["nope"].error
    assert results["ok"].error is None and len(results["ok"].texts) == 1


def test_cancel_ends_the_request_early(trained, client):
    panes = [gen.run_pane("p1", run_dir(trained, "a")), gen.run_pane("p2", run_dir(trained, "b"))]
    request = client.generate(panes, PROMPT, **{**SETTINGS, "max_new_tokens": 40}, n=50)
    for message in request:
        if "token" in message:
            request.cancel()
            break
    results = request.results(timeout=30)
    assert results["p1"].error == "cancelled" and results["p2"].error == "cancelled"
    assert len(results["p1"].texts) < 50


def test_killed_worker_is_an_error_in_each_waiting_pane(trained, tmp_path):
    panes = [gen.run_pane("p1", run_dir(trained, "a")), gen.run_pane("p2", run_dir(trained, "b"))]
    c = gen.GenerationClient(env=quiet_env(tmp_path))
    try:
        request = c.generate(panes, PROMPT, **{**SETTINGS, "max_new_tokens": 40}, n=50)
        for message in request:
            if "token" in message:
                os.kill(c.pid, signal.SIGKILL)
                break
        started = time.monotonic()
        results = request.results(timeout=30)
        assert time.monotonic() - started < 10
        for pane in ("p1", "p2"):
            assert "generation worker stopped (killed by SIGKILL)" in results[pane].error
        assert c.stats() == {"base_loads": {}, "adapter_loads": {}, "loaded": []}, "a fresh worker"
    finally:
        c.close()
    assert c.pid is None


def test_worker_exits_when_its_stdin_closes(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "workbench.generate.worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=quiet_env(tmp_path))
    assert b'"ready": true' in proc.stdout.readline()
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0


def test_client_side_never_imports_torch():
    code = ("import sys, workbench.generate.client, workbench.compare, workbench.report, "
            "workbench.results, workbench.comparisons, workbench.cli; "
            "workbench.cli.build_parser(); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


class FakeTokenizer:
    """Decodes ids to fixed pieces; id 9 is half a character until id 10 completes it."""

    PIECES = {1: "he", 2: "llo", 9: "\ufffd", 10: "é"}

    def decode(self, ids, skip_special_tokens=True):
        text = "".join(self.PIECES[i] for i in ids)
        return text.replace("\ufffdé", "é")


class Ids(list):
    def reshape(self, *_):
        return self

    def tolist(self):
        return list(self)


def test_token_stream_holds_back_half_characters():
    sent: list[str] = []
    stream = TokenStream(FakeTokenizer(), sent.append, lambda: False, interval=0.0)
    for ids in ([5, 5], [1], [2], [9], [10]):  # the prompt first, then one token at a time
        stream.put(Ids(ids))
    stream.end()
    assert sent == ["he", "llo", "é"]


def test_token_stream_coalesces_fast_tokens_into_one_message_per_interval():
    """A token every tick, an interval of 3 ticks: the first piece at once, then one per 3 ticks."""
    sent: list[str] = []
    now = [0]
    stream = TokenStream(FakeTokenizer(), sent.append, lambda: False, interval=3,
                         clock=lambda: now[0])
    stream.put(Ids([5]))  # the prompt
    tokens = [1, 2, 1, 2, 9, 10, 1, 2]
    for tick, token in enumerate(tokens):
        now[0] = tick
        stream.put(Ids([token]))
    # tick 0: "he"; tick 3: tokens 1-3; tick 6: tokens 4-6 (9 alone is half a character)
    assert sent == ["he", "llohello", "\u00e9he"]
    stream.end()  # tick 7's token waited for the end
    assert sent[-1] == "llo" and "".join(sent) == FakeTokenizer().decode(tokens)
    assert stream.pieces == 4
