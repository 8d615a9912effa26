"""PythonProcessor: EAS-style user code written into tmp_path and loaded by path."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from processors import ModelContext, ModelLoadError, ProcessorError, Request
from processors.python import PythonProcessor

ECHO = '''
import json
import allspark

class EchoProcessor(allspark.BaseProcessor):
    def initialize(self):
        with open(self.get_model_path() + "/prefix.txt") as f:
            self.prefix = f.read()

    def process(self, data):
        body = json.loads(data)
        if body.get("fail"):
            return b'{"error": "bad"}', 422
        if body.get("raise"):
            raise ValueError("boom")
        if body.get("text"):
            return self.prefix + body["text"]
        if body.get("bogus"):
            return 42
        if body.get("bogus_status"):
            return b"x", "200"
        return json.dumps({"echo": body, "prefix": self.prefix}).encode(), 200

if __name__ == "__main__":
    EchoProcessor(worker_threads=10).run()
'''


def write(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "prefix.txt").write_text(">> ")
    return folder


def loaded(code: Path, model: Path | None = None, **ctx: Any) -> PythonProcessor:
    processor = PythonProcessor(ModelContext(
        model_dir=str(model) if model else None, processor_path=str(code), **ctx))
    processor.load()
    return processor


def load_error(code: Path, **ctx: Any) -> str:
    with pytest.raises(ModelLoadError) as info:
        loaded(code, **ctx)
    return str(info.value)


@pytest.fixture
def echo(tmp_path: Path) -> PythonProcessor:
    write(tmp_path / "code", "app.py", ECHO)
    return loaded(tmp_path / "code", model_dir(tmp_path))


# ---------------------------------------------------------------- answers

def test_process_answers(echo: PythonProcessor) -> None:
    response = echo.predict(Request(b'{"x": 1}'))
    assert response.status == 200 and response.content_type == "application/json"
    assert json.loads(response.body) == {"echo": {"x": 1}, "prefix": ">> "}


def test_str_is_utf8_and_status_is_kept(echo: PythonProcessor) -> None:
    text = echo.predict(Request('{"text": "héllo"}'.encode()))
    assert text.body == ">> héllo".encode() and text.status == 200
    assert text.content_type == "application/octet-stream"
    failed = echo.predict(Request(b'{"fail": true}'))
    assert (failed.status, failed.body) == (422, b'{"error": "bad"}')


def test_user_exception_is_a_400(echo: PythonProcessor) -> None:
    with pytest.raises(ProcessorError) as info:
        echo.predict(Request(b'{"raise": true}'))
    assert info.value.status == 400 and info.value.message == "processor raised ValueError: boom"
    with pytest.raises(ProcessorError, match="processor raised JSONDecodeError"):
        echo.predict(Request(b"not json"))


def test_wrong_return_types_are_500s(echo: PythonProcessor) -> None:
    with pytest.raises(ProcessorError, match="process\\(\\) returned int; expected bytes") as info:
        echo.predict(Request(b'{"bogus": true}'))
    assert info.value.status == 500
    with pytest.raises(ProcessorError, match="returned status '200'") as info:
        echo.predict(Request(b'{"bogus_status": true}'))
    assert info.value.status == 500


def test_allspark_shim(echo: PythonProcessor) -> None:
    import allspark

    assert allspark.BaseProcessor.__module__ == "processors.allspark_shim"
    assert echo.instance.worker_threads == 5 and echo.instance.io_threads == 4
    with pytest.raises(RuntimeError, match="eas-server runs processors itself"):
        echo.instance.run()
    with pytest.raises(AttributeError, match="only BaseProcessor"):
        allspark.AsyncProcessor  # noqa: B018


def test_two_loads_do_not_share_module_state(tmp_path: Path) -> None:
    write(tmp_path, "counter.py", '''
        calls = []
        class Counter:
            def initialize(self): pass
            def process(self, data):
                calls.append(data)
                return str(len(calls))
    ''')
    first, second = loaded(tmp_path / "counter.py"), loaded(tmp_path / "counter.py")
    assert first.predict(Request(b"a")).body == b"1"
    assert first.predict(Request(b"b")).body == b"2"
    assert second.predict(Request(b"c")).body == b"1"


# ---------------------------------------------------------------- construction

def test_constructor_options_only_when_accepted(tmp_path: Path) -> None:
    write(tmp_path / "a", "app.py", '''
        class WithOptions:
            def __init__(self, worker_threads=1, io_threads=1):
                self.options = (worker_threads, io_threads)
            def initialize(self): pass
            def process(self, data): return data
    ''')
    write(tmp_path / "b", "app.py", '''
        class Bare:
            def initialize(self): pass
            def process(self, data): return data, 200
    ''')
    spec = {"metadata": {"rpc": {"io_threads": 7}}}
    with_options = loaded(tmp_path / "a", workers=3, options=spec)
    assert with_options.instance.options == (3, 7)
    assert loaded(tmp_path / "b").predict(Request(b"hi")).body == b"hi"


def test_attributes_set_before_initialize(tmp_path: Path) -> None:
    write(tmp_path / "code", "app.py", '''
        class Seen:
            def initialize(self):
                self.seen = (self.model_path, self.model_entry, self.model_config)
            def process(self, data): return data
    ''')
    model = model_dir(tmp_path)
    processor = loaded(tmp_path / "code", model, model_entry="prefix.txt", model_config={"k": 1})
    assert processor.instance.seen == (str(model), str(model / "prefix.txt"), {"k": 1})


def test_cpp_style_initialize(tmp_path: Path) -> None:
    write(tmp_path / "code", "app.py", '''
        class Cpp:
            def initialize(self, model_entry, model_config):
                self.args = (model_entry, model_config)
            def process(self, data): return data, 200
    ''')
    model = model_dir(tmp_path)
    processor = loaded(tmp_path / "code", model, model_entry="prefix.txt",
                       model_config={"threshold": 0.5})
    assert processor.instance.args == (str(model / "prefix.txt"), '{"threshold": 0.5}')


# ---------------------------------------------------------------- finding the code

def test_entry_file_rules(tmp_path: Path) -> None:
    body = '''
        class P:
            def initialize(self): pass
            def process(self, data): return b"%s"
    '''
    write(tmp_path / "single", "serve.py", body % "single")
    assert loaded(tmp_path / "single").predict(Request(b"")).body == b"single"

    write(tmp_path / "two", "a.py", body % "a")
    write(tmp_path / "two", "b.py", body % "b")
    assert "(a.py, b.py); set processor_entry" in load_error(tmp_path / "two")
    assert loaded(tmp_path / "two", processor_entry="b.py").predict(Request(b"")).body == b"b"
    assert "'c.py' not found" in load_error(tmp_path / "two", processor_entry="c.py")
    assert "does not exist" in load_error(tmp_path / "nowhere")
    (tmp_path / "code.zip").write_bytes(b"PK")
    assert "is not a .py file or a folder" in load_error(tmp_path / "code.zip")
    with pytest.raises(ModelLoadError, match="needs processor_path"):
        PythonProcessor(ModelContext()).load()


def test_entry_in_subfolder_imports_siblings(tmp_path: Path) -> None:
    write(tmp_path / "code" / "src", "helper_mod_for_eas_test.py", "GREETING = b'hi from helper'\n")
    write(tmp_path / "code", "root_mod_for_eas_test.py", "def check(x):\n    assert x, 'empty'\n")
    write(tmp_path / "code" / "src", "main.py", '''
        from helper_mod_for_eas_test import GREETING
        from root_mod_for_eas_test import check
        class P:
            def initialize(self): pass
            def process(self, data):
                check(data)
                return GREETING
    ''')
    processor = loaded(tmp_path / "code", processor_entry="src/main.py")
    assert processor.predict(Request(b"x")).body == b"hi from helper"
    with pytest.raises(ProcessorError, match="processor raised AssertionError: empty"):
        processor.predict(Request(b""))


def test_class_selection(tmp_path: Path) -> None:
    write(tmp_path / "two", "app.py", '''
        class First:
            def initialize(self): pass
            def process(self, data): return b"first"
        class Second:
            def initialize(self): pass
            def process(self, data): return b"second"
        class Helper:
            pass
    ''')
    message = load_error(tmp_path / "two")
    assert "several processor classes in app.py: First, Second; set processor_mainclass" in message
    chosen = loaded(tmp_path / "two", processor_mainclass="Second")
    assert chosen.predict(Request(b"")).body == b"second"
    assert "'Third' is not a class in app.py (classes: First, Helper, Second)" in \
        load_error(tmp_path / "two", processor_mainclass="Third")
    assert "Helper in app.py lacks initialize() or process()" in \
        load_error(tmp_path / "two", processor_mainclass="Helper")

    write(tmp_path / "subclass", "app.py", '''
        class Base:
            def initialize(self): pass
            def process(self, data): return b"base"
        class Real(Base):
            def process(self, data): return b"real"
    ''')
    assert loaded(tmp_path / "subclass").predict(Request(b"")).body == b"real"

    write(tmp_path / "none", "app.py", "class Nothing:\n    pass\n")
    assert "no class with initialize() and process() in app.py; classes found: Nothing" in \
        load_error(tmp_path / "none")


# ---------------------------------------------------------------- load failures

def test_bad_import_names_the_file_and_line(tmp_path: Path) -> None:
    app = write(tmp_path, "app.py", "import json\nimport no_such_module_for_eas_test\n")
    message = load_error(tmp_path)
    assert "importing app.py failed: ModuleNotFoundError: No module named " \
           "'no_such_module_for_eas_test'" in message
    assert f"(at {app}:2)" in message
    assert not [m for m in sys.modules if m.startswith("eas_user_") and m.endswith("_app")
                and getattr(sys.modules[m], "__file__", None) == str(app)]


def test_syntax_error_location(tmp_path: Path) -> None:
    app = write(tmp_path, "app.py", "x = 1\ndef broken(:\n")
    message = load_error(tmp_path)
    assert "SyntaxError" in message and f"(at {app}:2)" in message


def test_initialize_failure_names_the_user_line(tmp_path: Path) -> None:
    write(tmp_path, "eas_test_model_utils.py",
          "def load(path):\n    raise FileNotFoundError('no weights at ' + path)\n")
    write(tmp_path, "app.py", '''
        import eas_test_model_utils
        class P:
            def initialize(self):
                eas_test_model_utils.load("/nowhere")
            def process(self, data): return data
    ''')
    message = load_error(tmp_path, processor_entry="app.py")
    assert "P.initialize() failed: FileNotFoundError: no weights at /nowhere" in message
    assert f"(at {tmp_path / 'eas_test_model_utils.py'}:2)" in message


def test_constructor_failure(tmp_path: Path) -> None:
    write(tmp_path, "app.py", '''
        class P:
            def __init__(self):
                raise RuntimeError("no GPU")
            def initialize(self): pass
            def process(self, data): return data
    ''')
    assert "P() failed: RuntimeError: no GPU" in load_error(tmp_path)
