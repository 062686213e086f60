"""Plugin discovery: built-ins via entry points, a plugins folder, blocking, broken plugins."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from workbench.api import Backend, hookimpl
from workbench.plugins import BLOCK_ENV, load_plugins

GOOD = '''
from workbench.api import Backend, Evaluator, hookimpl

@hookimpl
def register_backends(register):
    register(Backend(name="qwen", default_model="Qwen/Qwen2.5-0.5B", target_modules=("q_proj",)))

@hookimpl
def register_evaluators(register):
    register(Evaluator(name="length", compute=lambda ctx: {"length": 1.0}))
'''


def write(folder, name, text):
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(text))
    return folder


def test_builtins_come_through_the_entry_point_group():
    reg = load_plugins()
    assert reg.failures == []
    assert {"smollm", "gpt2", "smollm2-gguf", "tiny"} <= set(reg.backends)
    assert {"perplexity", "bits_per_byte", "samples"} <= set(reg.evaluators)
    assert reg.backends["gpt2"].target_modules == ("c_attn", "c_proj", "c_fc")
    assert set(reg.backends["smollm"].target_modules) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"}
    origin = reg.origin("backends", "smollm")
    assert origin.source.startswith("workbench ")


def test_plugins_folder_adds_backends_and_evaluators(tmp_path):
    reg = load_plugins(write(tmp_path / "plugins", "qwen", GOOD))
    assert reg.backends["qwen"].default_model == "Qwen/Qwen2.5-0.5B"
    assert "length" in reg.evaluators
    assert reg.origin("backends", "qwen").source.endswith("qwen.py")


def test_a_plugin_that_fails_to_import_is_reported_and_the_rest_load(tmp_path):
    folder = write(tmp_path / "plugins", "broken", "raise RuntimeError('boom at import')\n")
    write(folder, "qwen", GOOD)
    reg = load_plugins(folder)
    assert "qwen" in reg.backends and "smollm" in reg.backends
    assert [(f.plugin, f.error) for f in reg.failures] == [("broken", "RuntimeError: boom at import")]


def test_a_hook_that_raises_is_reported_and_the_rest_load(tmp_path):
    folder = write(tmp_path / "plugins", "raiser", '''
        from workbench.api import hookimpl
        @hookimpl
        def register_backends(register):
            raise ValueError("no GPU driver")
    ''')
    reg = load_plugins(folder)
    assert "smollm" in reg.backends
    assert any("register_backends: ValueError: no GPU driver" in f.error for f in reg.failures)


def test_a_misspelt_hook_is_reported(tmp_path):
    folder = write(tmp_path / "plugins", "typo", '''
        from workbench.api import hookimpl
        @hookimpl
        def register_backend(register):
            pass
    ''')
    reg = load_plugins(folder)
    assert any("register_backend" in f.error for f in reg.failures)


def test_duplicate_backend_name_is_reported_not_overwritten(tmp_path):
    folder = write(tmp_path / "plugins", "dupe", '''
        from workbench.api import Backend, hookimpl
        @hookimpl
        def register_backends(register):
            register(Backend(name="gpt2", default_model="evil/gpt2", target_modules=("x",)))
    ''')
    reg = load_plugins(folder)
    assert reg.backends["gpt2"].default_model != "evil/gpt2"
    assert any("already provided" in f.error for f in reg.failures)


def test_env_var_blocks_named_plugins(tmp_path, monkeypatch):
    folder = write(tmp_path / "plugins", "qwen", GOOD)
    monkeypatch.setenv(BLOCK_ENV, "qwen, evaluators")
    reg = load_plugins(folder)
    assert "qwen" not in reg.backends
    assert "perplexity" not in reg.evaluators and "smollm" in reg.backends
    assert reg.blocked == ["qwen", "evaluators"]


def test_in_process_plugin_object():
    class Extra:
        @hookimpl
        def register_backends(self, register):
            register(Backend(name="fake", default_model="x", target_modules=("y",)))

    assert "fake" in load_plugins(extra=[Extra()]).backends


def test_loading_every_plugin_does_not_import_torch(tmp_path):
    write(tmp_path / "plugins", "qwen", GOOD)
    code = textwrap.dedent(f"""
        import sys
        from workbench.plugins import load_plugins
        reg = load_plugins({str(tmp_path / "plugins")!r})
        for b in reg.backends.values():
            b.resolve_default_model() if not callable(b.default_model) else None
        heavy = [m for m in ("torch", "transformers", "peft", "trl", "datasets") if m in sys.modules]
        assert len(reg.backends) >= 5, reg.backends
        print("heavy:", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "heavy: []"
