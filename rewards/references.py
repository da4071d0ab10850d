"""Functions of the user's own, named by reference: ``path/to/file.py:fn`` or ``package.module:fn``.

A reference is found without running anything (:func:`reference_file`, :func:`check_reference`:
the file exists and defines the name), so ``aha run --dry-run`` can list the files a recipe
would import; :func:`load_function` imports it (running the file's code) once per process.
:func:`source_digest` hashes the file, which the run records so a resumed run refuses a
changed function. :class:`UserReward` turns a user's reward into what a built-in layer is:
TRL's signature, errors counted per completion, picklable by reference.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import importlib
import importlib.util
import inspect
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aha.formats import InputError, user_path

from .core import KINDS, log

_LOADED: dict[str, Callable[..., Any]] = {}
_LOCK = threading.Lock()
USER_CODE_TIMEOUT = 120.0  # seconds one call of your code may take, unless a recipe's user_code_timeout says
USER_CODE_TIMEOUT_MAX = 86_400.0  # a day: past it a timer cannot wait (and no call should)
_limit = {"seconds": USER_CODE_TIMEOUT}
_in_user_code = threading.local()
_real_exit = os._exit
_WATCHDOG_SIGNAL = getattr(signal, "SIGUSR2", None)  # not SIGALRM: libraries (math-verify) use that one themselves


class UserCodeError(InputError):
    """Your code ran over its time or tried to end the process: the run stops, naming the call."""


class _ExitInUserCode(BaseException):  # not an Exception: your code's ``except Exception`` does not swallow it
    def __init__(self, code: Any):
        super().__init__(code)
        self.code = code


class _OverTime(BaseException):  # raised in the main thread by the watchdog's signal
    pass


def _guarded_exit(code: int = 0) -> None:
    """``os._exit`` as aha's processes see it: inside your code it is refused (the run, not your function, decides
    how the process ends); anywhere else it is the real one."""
    if getattr(_in_user_code, "active", False):
        raise _ExitInUserCode(code)
    _real_exit(code)


def _leave_user_code() -> None:
    _in_user_code.active = False


os.register_at_fork(after_in_child=_leave_user_code)  # a child your code forks ends as processes do


def set_user_code_timeout(seconds: float) -> None:
    """The longest one call of your code may take in this process (a recipe's ``user_code_timeout``)."""
    _limit["seconds"] = min(float(seconds), USER_CODE_TIMEOUT_MAX)


def call_bounded(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` for code of yours (a reward function, a grader, a reward model's batch), bounded:
    a call that runs past the time limit, or that calls ``sys.exit``/``os._exit``, is a :class:`UserCodeError`
    naming ``what``; whatever else it raises is raised here, as if called directly. On the main thread your code
    runs there (what it sets per thread, and libraries that need the main thread, work as in a plain call) and a
    watchdog's signal stops a call past its time, a blocking wait included; elsewhere it runs in a thread of its
    own that is abandoned past its time.

    >>> call_bounded("reward short", lambda xs: [len(x) for x in xs], ["ab"])
    [2]
    >>> import sys
    >>> try:
    ...     call_bounded("grader mine", sys.exit, 0)
    ... except UserCodeError as err:
    ...     print(err)
    grader mine: called exit(0) inside a call: your code may not end the run (raise an exception to refuse)
    """
    os._exit = _guarded_exit  # idempotent; only code of yours, running, is refused
    seconds = _limit["seconds"]
    over = (f"{what}: one call ran over {seconds:g} s and was stopped (a network call with no timeout, or a judge "
            "that never answers?); make it return sooner, or raise user_code_timeout in the recipe")

    def exited(code: Any) -> str:
        return f"{what}: called exit({code!r}) inside a call: your code may not end the run (raise an exception to refuse)"

    if threading.current_thread() is not threading.main_thread() or _WATCHDOG_SIGNAL is None:
        return _call_in_thread(fn, args, kwargs, seconds, over, exited)
    fired, done = threading.Event(), threading.Event()
    main = threading.main_thread().ident

    def watch() -> None:
        if not done.wait(seconds):
            fired.set()
            signal.pthread_kill(main, _WATCHDOG_SIGNAL)

    def on_signal(signum: int, frame: Any) -> None:
        if getattr(_in_user_code, "active", False):
            raise _OverTime()

    previous = signal.signal(_WATCHDOG_SIGNAL, on_signal)
    watchdog = threading.Thread(target=watch, name="aha-user-code-watchdog", daemon=True)
    _in_user_code.active = True
    watchdog.start()
    try:
        value = fn(*args, **kwargs)
    except _OverTime:
        raise UserCodeError(over) from None
    except (SystemExit, _ExitInUserCode) as err:
        raise UserCodeError(exited(err.code)) from None
    finally:
        _in_user_code.active = False
        done.set()
        watchdog.join()
        signal.signal(_WATCHDOG_SIGNAL, previous)
    if fired.is_set():  # past its time, though it swallowed the stop (an ``except BaseException`` of its own)
        raise UserCodeError(over)
    return value


def _call_in_thread(fn: Callable[..., Any], args: tuple, kwargs: dict, seconds: float, over: str,
                    exited: Callable[[Any], str]) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        _in_user_code.active = True
        try:
            box["value"] = fn(*args, **kwargs)
        except (SystemExit, _ExitInUserCode) as err:
            box["exit"] = err.code
        except BaseException as err:  # noqa: BLE001 - handed to the caller, as a direct call would raise it
            box["error"] = err

    # A daemon thread: one that never returns (a network call with no timeout) cannot keep the process alive.
    thread = threading.Thread(target=target, name="aha-user-code", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise UserCodeError(over.replace("was stopped", "was abandoned"))
    if "exit" in box:
        raise UserCodeError(exited(box["exit"]))
    if "error" in box:
        raise box["error"]
    return box["value"]


def is_reference(name: Any) -> bool:
    """Does ``name`` name a function by reference (``file.py:fn`` or ``package.module:fn``)?

    >>> is_reference("my_rewards.py:score"), is_reference("pkg.mod:fn"), is_reference("format_exact")
    (True, True, False)
    """
    if not isinstance(name, str) or name.count(":") != 1:
        return False
    where, attr = name.split(":")
    return bool(where) and attr.isidentifier()


def resolve_reference(name: str, base_dir: str | Path | None = None) -> str:
    """A file reference with its file made absolute: relative to the working directory, else
    to ``base_dir`` (the recipe's folder). Module references are returned as they are."""
    where, attr = name.split(":")
    if not where.endswith(".py"):
        return name
    path = user_path(where, base_dir)
    return f"{path.resolve()}:{attr}" if path.exists() else name  # a missing file is named as it was written


def reference_file(name: str) -> Path:
    """The source file a reference would import, found without importing anything."""
    where, _ = name.split(":")
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise InputError(f"{name}: no such file: {where}")
        return path
    parts = where.split(".")
    if not all(p.isidentifier() for p in parts):
        raise InputError(f"{name}: {where!r} is neither a .py file nor a dotted module name")
    for entry in [str(Path.cwd())] + sys.path:
        base = Path(entry or ".").joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    raise InputError(f"{name}: no module {where} on the Python path (a file is named path/to/file.py:{name.split(':')[1]})")


def check_reference(name: str) -> Path:
    """The file a reference names, checked without running it: it parses, and it defines the
    name at its top level (a ``def``, a class or an assignment). Returns the file."""
    path = reference_file(name)
    attr = name.split(":")[1]
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{name}: {path} is not valid Python ({type(err).__name__}: {err})") from None
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
    if attr not in defined:
        shown = ", ".join(sorted(n for n in defined if not n.startswith("_"))[:8]) or "nothing"
        raise InputError(f"{name}: {path} defines no {attr!r} at its top level (it defines {shown})")
    return path


def _module_file(root: Path, parts: list[str]) -> list[Path]:
    """The files importing ``parts`` from ``root`` runs (each package's ``__init__.py`` on the way); none when
    it is not found there."""
    files, here = [], root
    for i, part in enumerate(parts):
        here, last = here / part, i == len(parts) - 1
        if (here / "__init__.py").is_file():
            files.append(here / "__init__.py")
        elif last and here.with_suffix(".py").is_file():
            files.append(here.with_suffix(".py"))
        elif not here.is_dir():
            return files if last else []  # the last name may be a function of the package, not a module
    return files


def local_files(path: Path, roots: list[Path] | None = None) -> list[Path]:
    """``path`` and every file of yours it imports, directly or not: modules found beside it (or under ``roots``),
    packages' ``__init__.py`` included; installed packages and the standard library are not yours. Found by
    reading the files, not running them."""
    path = path.resolve()
    roots = [r.resolve() for r in (roots or [])] or [path.parent]
    if any(_installed(r) for r in roots):
        return [path]  # a module of an installed package: its imports are the package's, not yours
    seen: dict[Path, None] = {}
    todo = [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen[current] = None
        try:
            tree = ast.parse(current.read_text(encoding="utf-8"), filename=str(current))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue  # the reference check names a file that does not parse; here it only has no imports
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                wanted = [(a.name.split("."), None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = current.parent
                for _ in range(max(node.level - 1, 0)):
                    base = base.parent
                head = node.module.split(".") if node.module else []
                wanted = [(head + [a.name], base if node.level else None) for a in node.names] + (
                    [(head, base if node.level else None)] if head else [])
            else:
                continue
            for parts, relative_to in wanted:
                for root in [relative_to] if relative_to is not None else roots:
                    todo.extend(_module_file(root, parts))
    return sorted(seen)


def _installed(folder: Path) -> bool:
    """Is ``folder`` where installed packages or the standard library live (nothing of the user's)?"""
    import sysconfig

    places = {Path(p).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib")
              if (p := sysconfig.get_paths().get(key))}
    return folder in places or folder.name in ("site-packages", "dist-packages")


def reference_files(name: str) -> list[Path]:
    """Every file of yours that importing a reference runs: its file, the local modules it imports and, for a
    module reference, its packages' ``__init__.py``."""
    path = reference_file(name)
    where = name.split(":")[0]
    if where.endswith(".py"):
        return local_files(path)  # modules beside it: what its folder holds, wherever it is run from
    parts, root = where.split("."), path.parent
    for _ in range(len(parts) if path.name == "__init__.py" else len(parts) - 1):
        root = root.parent  # the Python path entry the module was found under
    return sorted({f for module in _module_file(root, parts) for f in local_files(module, [root])})


def source_digest(name: str) -> str:
    """The sha256 of the file a reference names and of every local module it imports (what a run records: a
    changed file is refused). A file that imports nothing of yours hashes as its bytes alone."""
    files = sorted({f.resolve() for f in reference_files(name)})
    main = reference_file(name).resolve()
    if files == [main]:
        return file_digest(name)
    base = Path(os.path.commonpath([str(f.parent) for f in files]))  # names relative to it: the folder may move
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(base)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()


def file_digest(name: str) -> str:
    """The sha256 of the named file alone (what aha recorded before it hashed the modules a file imports)."""
    return hashlib.sha256(reference_file(name).resolve().read_bytes()).hexdigest()


def load_function(name: str) -> Callable[..., Any]:
    """Import the function a reference names (once per process). Any failure is one line."""
    with _LOCK:
        if name in _LOADED:
            return _LOADED[name]
        path = check_reference(name)
        where, attr = name.split(":")
        try:
            if where.endswith(".py"):
                module_name = "aha_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
                spec = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                call_bounded(f"{name}: importing {path}", spec.loader.exec_module, module)
            else:
                module = call_bounded(f"{name}: importing {path}", importlib.import_module, where)
        except UserCodeError:
            raise
        except Exception as err:  # noqa: BLE001 - the user's file: whatever it raises is one line naming it
            raise InputError(f"{name}: importing {path} raised {type(err).__name__}: {err}") from None
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise InputError(f"{name}: {attr} in {path} is {type(fn).__name__}, not a function")
        _LOADED[name] = fn
        return fn


def function_digest(fn: Callable[..., Any]) -> str:
    """The sha256 of a callable's source (a function passed in Python, not by reference)."""
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        source = getattr(fn, "__qualname__", repr(fn))
    return hashlib.sha256(source.encode()).hexdigest()


def _number(value: Any) -> float | None:
    """A reward value as TRL takes it: a finite number, or None (skipped)."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (list, tuple)):
        value = value.item()  # a numpy or torch scalar
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"returned {value!r}, not a finite number or None")
    return float(value)


def checked_scores(values: Any, count: int) -> list[float | None]:
    """A reward function's return value as TRL needs it: one finite number or None per completion.

    >>> checked_scores([1, None, 0.5], 3)
    [1.0, None, 0.5]
    >>> checked_scores([1.0], 2)
    Traceback (most recent call last):
    ...
    TypeError: returned 1 values for 2 completions
    """
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
        raise TypeError(f"returned {type(values).__name__}, not a list with one score per completion")
    values = list(values)
    if len(values) != count:
        raise TypeError(f"returned {len(values)} values for {count} completions")
    return [_number(v) for v in values]


def check_options(fn: Callable[..., Any], options: dict[str, Any], what: str) -> None:
    """Each option must name one of the function's parameters: ``**kwargs`` (which TRL's columns need) does not
    count, so a misspelt option is refused rather than lost; a function that takes any option says so with
    ``fn.accepts_any_option = True``.

    >>> def close(completions, answer, tolerance=0.05, **kwargs): ...
    >>> check_options(close, {"tolerence": 0.1}, "reward close")
    Traceback (most recent call last):
    ...
    aha.formats.errors.InputError: reward close: no parameter named 'tolerence' (its options: answer, tolerance; a function that takes any option sets fn.accepts_any_option = True)
    """
    if not options or getattr(fn, "accepts_any_option", False):
        return
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return  # a builtin or C function: nothing to read
    named = [p for p, v in parameters.items() if v.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                             inspect.Parameter.KEYWORD_ONLY)]
    takes = [p for p in named if p not in ("completions", "prompts", "completion_ids", "trainer_state", "log_metric")]
    unknown = [k for k in options if k not in named]
    if unknown:
        raise InputError(f"{what}: no parameter named {', '.join(map(repr, unknown))} (its options: "
                         f"{', '.join(takes) or 'none'}; a function that takes any option sets "
                         "fn.accepts_any_option = True)")


class UserReward:
    """A reward function of the user's, with what a built-in layer gets: TRL's signature
    (``fn(completions, **columns)``; TRL also passes ``prompts``, ``completion_ids``,
    ``trainer_state`` and ``log_metric``), its options bound, completions it raises on
    scoring None and counted in ``errors`` (a batch it raises on is scored one completion at a
    time, so one odd completion costs only its own score), and pickling by reference (TRL's
    workers import the function again). ``function`` is a reference or, in Python, a callable.

    >>> import pickle, tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> _ = open(os.path.join(folder, "mine.py"), "w").write(
    ...     "def short(completions, **kw):\\n    return [1.0 / len(c) for c in completions]\\n")
    >>> reward = UserReward(os.path.join(folder, "mine.py") + ":short")
    >>> reward(["ab", ""]), reward.errors
    ([0.5, None], 1)
    >>> pickle.loads(pickle.dumps(reward))(["abcd"])
    [0.25]
    """

    def __init__(self, function: str | Callable[..., Any], options: dict[str, Any] | None = None,
                 name: str | None = None):
        self.reference = function if isinstance(function, str) else None
        self._fn = load_function(function) if isinstance(function, str) else function
        self.options = dict(options or {})
        self.__name__ = self.__qualname__ = name or getattr(self._fn, "__name__", type(self._fn).__name__)
        check_options(self._fn, self.options, f"reward {self.__name__}")
        self.kind = getattr(self._fn, "kind", "other")  # your function may say what it scores: fn.kind = "format"
        if self.kind not in KINDS:
            raise InputError(f"reward {self.__name__}: its kind attribute must be one of {', '.join(KINDS)}, "
                             f"not {self.kind!r}")
        self.__doc__ = getattr(self._fn, "__doc__", None)
        self.errors = 0
        self._lock = threading.Lock()
        self._said = False

    def _call(self, completions: list[Any], columns: dict[str, Any]) -> list[float | None]:
        # Copies: what your function does to its arguments cannot change what the next reward sees.
        # (the data only: TRL's trainer_state and log_metric are passed as they are)
        completions = copy.deepcopy(completions)
        columns = {k: copy.deepcopy(v) if isinstance(v, (list, tuple, dict)) else v for k, v in columns.items()}
        values = call_bounded(f"reward {self.__name__}", self._fn, completions=completions,
                              **{**columns, **self.options})
        return checked_scores(values, len(completions))

    def __call__(self, completions: Any = None, **columns: Any) -> list[float | None]:
        completions = list(completions or [])
        try:
            return self._call(completions, columns)
        except UserCodeError:
            raise  # over time, or an exit: the run stops (scoring one by one would only repeat it)
        except Exception as err:  # noqa: BLE001 - scored one by one below; every failure counted
            first_error = err
        scores, failed = [], 0
        for i, completion in enumerate(completions):
            one = {k: [v[i]] if isinstance(v, (list, tuple)) and len(v) == len(completions) else v
                   for k, v in columns.items()}
            try:
                scores.append(self._call([completion], one)[0])
            except UserCodeError:
                raise
            except Exception:  # noqa: BLE001 - counted, never silent
                scores.append(None)
                failed += 1
        with self._lock:
            self.errors += failed
            first, self._said = not self._said and failed > 0, self._said or failed > 0
        if first:
            log.warning("reward %s raised on a completion (%s: %s); it scores None there and every such error is "
                        "counted", self.__name__, type(first_error).__name__, first_error)
        return scores

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k != "_lock"}
        if self.reference is not None:
            state.pop("_fn")  # imported again where it is unpickled
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "_fn" not in state:
            self._fn = load_function(self.reference)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"UserReward({self.__name__}: {self.reference or self._fn!r})"


def test_call(fn: Callable[..., Any], what: str, completions: list[str], columns: dict[str, list[Any]]) -> None:
    """Call a reward once as TRL will, on sample rows, before any training: a function that raises,
    returns the wrong number of values or something that is not a number is one line naming it."""
    n = len(completions)
    trl_keywords = {"prompts": columns.get("prompt", [""] * n), "completion_ids": [[] for _ in range(n)],
                    "trainer_state": None, "log_metric": lambda name, value: None}
    keywords = {**trl_keywords, **{k: v for k, v in columns.items() if k != "prompt"}}
    try:
        if isinstance(fn, UserReward):
            fn._call(completions, keywords)  # as it scores in training, without the scoring one at a time
        else:  # a layer of aha's, or a reward model (its batches are bounded; its loading, maybe a download, is not)
            checked_scores(fn(completions=completions, **keywords), n)
    except UserCodeError:
        raise
    except TypeError as err:
        hint = (" (TRL passes prompts, completions, completion_ids, trainer_state, log_metric and the dataset's "
                f"columns {', '.join(sorted(set(columns) - {'prompt'}))} as keywords: give the function **kwargs)"
                if "argument" in str(err) else "")
        raise InputError(f"{what}: {err}{hint}") from None
    except Exception as err:  # noqa: BLE001 - the user's code: whatever it raises is one line naming it
        raise InputError(f"{what}: raised {type(err).__name__}: {err} when called on {n} sample completions") from None
