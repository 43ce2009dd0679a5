"""Per-invocation environments: inside ``function_environment`` a function sees exactly its variables, on its own
thread, and outside one ``os.environ`` is the ordinary process environment."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest

from modelrun_local import environ
from modelrun_local.environ import ScopedEnviron, function_environment, process_environ

PROCESS_ONLY = "MODELRUN_TEST_PROCESS_ONLY"
SHARED_NAME = "MODELRUN_TEST_SHARED_NAME"
JOIN_TIMEOUT_S = 10.0


@pytest.fixture(autouse=True)
def scoped_environ() -> None:
    """Every test here runs with ``os.environ`` replaced (idempotent, and transparent outside a scope)."""
    environ.install()


def run_in_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target)
    thread.start()
    return thread


def join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish before the deadline"


# --- inside a scope ----------------------------------------------------------------------------------------


def test_inside_a_function_environment_os_environ_is_exactly_its_variables() -> None:
    # given a function's variables
    variables = {"MODEL_ROOT": "/opt/models", "IMAGES_BUCKET": "images"}

    # when the environment is read inside its scope
    with function_environment(variables):
        seen = dict(os.environ)

    # then it is exactly those variables, nothing of the process's
    assert seen == variables


def test_a_process_variable_is_invisible_inside_a_function_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a variable set in the process only
    monkeypatch.setenv(PROCESS_ONLY, "from-process")

    # when it is looked up inside a function's scope
    with function_environment({"OTHER": "1"}):
        found = (os.getenv(PROCESS_ONLY), PROCESS_ONLY in os.environ)

    # then the function does not see it
    assert found == (None, False)


def test_a_write_inside_a_scope_stays_in_the_scope() -> None:
    # given a scope
    with function_environment({}) as scoped:
        # when the function sets a variable
        os.environ[PROCESS_ONLY] = "written-by-function"
        inside = os.environ[PROCESS_ONLY]

    # then it saw its write, the scope's dict holds it, and the process environment does not
    assert inside == "written-by-function"
    assert scoped == {PROCESS_ONLY: "written-by-function"}
    assert PROCESS_ONLY not in os.environ
    assert PROCESS_ONLY not in process_environ()


def test_a_write_inside_a_scope_does_not_change_the_variables_it_started_from() -> None:
    # given a function's configured variables, reused for every invocation
    configured = {"LOG_LEVEL": "INFO"}

    # when one invocation changes and adds variables
    with function_environment(configured):
        os.environ["LOG_LEVEL"] = "DEBUG"
        os.environ["EXTRA"] = "1"

    # then the configuration the next invocation starts from is unchanged
    assert configured == {"LOG_LEVEL": "INFO"}


def test_deleting_a_variable_inside_a_scope_leaves_the_process_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    # given the same name in the process and in the function's variables
    monkeypatch.setenv(SHARED_NAME, "process-value")

    # when the function deletes it
    with function_environment({SHARED_NAME: "function-value"}):
        del os.environ[SHARED_NAME]
        gone_inside = SHARED_NAME not in os.environ

    # then it was gone for the function, and the process still has its own value
    assert gone_inside
    assert os.environ[SHARED_NAME] == "process-value"


def test_copy_inside_a_scope_is_a_plain_dict_of_the_scope() -> None:
    # given a scope
    with function_environment({"A": "1"}):
        # when the environment is copied
        snapshot = os.environ.copy()

    # then the copy is an independent dict of the scope's variables
    assert type(snapshot) is dict
    assert snapshot == {"A": "1"}


def test_the_repr_says_which_environment_is_showing() -> None:
    # given the process scope and an invocation scope
    with function_environment({"A": "1", "B": "2"}):
        inside = repr(os.environ)

    # then the invocation one says so and counts its variables
    assert inside == "ScopedEnviron(invocation, 2 variables)"
    assert repr(os.environ).startswith("ScopedEnviron(process, ")


def test_nested_scopes_restore_the_outer_scope_on_exit() -> None:
    # given an outer scope
    with function_environment({"LEVEL": "outer"}):
        # when an inner scope is entered and left
        with function_environment({"LEVEL": "inner"}):
            inner = os.environ["LEVEL"]
        after_inner = os.environ["LEVEL"]

    # then the outer variables are back
    assert (inner, after_inner) == ("inner", "outer")


def test_the_scope_ends_even_when_the_function_raises() -> None:
    # given a function that fails inside its scope
    with pytest.raises(RuntimeError), function_environment({PROCESS_ONLY: "function"}):
        raise RuntimeError("handler failed")

    # then the process environment is showing again
    assert PROCESS_ONLY not in os.environ
    assert repr(os.environ).startswith("ScopedEnviron(process, ")


# --- threads -------------------------------------------------------------------------------------------------


def test_concurrent_threads_each_see_their_own_function_environment() -> None:
    # given two invocations whose scopes are open at the same time on two threads
    both_inside = threading.Barrier(2, timeout=JOIN_TIMEOUT_S)
    seen: dict[str, dict[str, str]] = {}

    def invocation(name: str) -> None:
        with function_environment({"FUNCTION": name, f"ONLY_{name.upper()}": "1"}):
            both_inside.wait()
            seen[name] = dict(os.environ)

    # when each reads the environment while the other's scope is open
    join_all([run_in_thread(lambda: invocation("predict")), run_in_thread(lambda: invocation("recover"))])

    # then each saw exactly its own variables
    assert seen == {
        "predict": {"FUNCTION": "predict", "ONLY_PREDICT": "1"},
        "recover": {"FUNCTION": "recover", "ONLY_RECOVER": "1"},
    }


def test_a_thread_started_inside_a_scope_sees_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a process variable, and a function scope on this thread
    monkeypatch.setenv(PROCESS_ONLY, "from-process")
    seen: dict[str, str | None] = {}

    def worker() -> None:
        seen["value"] = os.environ.get(PROCESS_ONLY)

    # when the function starts a thread of its own (documented: new threads begin with an empty context)
    with function_environment({"OTHER": "1"}):
        join_all([run_in_thread(worker)])

    # then that thread reads the process environment
    assert seen == {"value": "from-process"}


# --- outside any scope ---------------------------------------------------------------------------------------


def test_monkeypatch_setenv_still_works_after_install() -> None:
    # given os.environ replaced by the scoped mapping
    assert isinstance(os.environ, ScopedEnviron)

    # when a test sets a variable with monkeypatch and then undoes it
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PROCESS_ONLY, "patched")
        during = (os.environ.get(PROCESS_ONLY), os.getenv(PROCESS_ONLY), process_environ().get(PROCESS_ONLY))

    # then the variable was visible everywhere while set, and is gone everywhere after
    assert during == ("patched", "patched", "patched")
    assert PROCESS_ONLY not in os.environ
    assert PROCESS_ONLY not in process_environ()


def test_a_write_outside_any_scope_reaches_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a variable written outside any scope (the real environment underneath, putenv included)
    monkeypatch.setenv(PROCESS_ONLY, "inherited")

    # when a child process reads its environment
    child = subprocess.run(
        [sys.executable, "-c", f"import os; print(os.environ['{PROCESS_ONLY}'])"],
        capture_output=True,
        text=True,
        timeout=JOIN_TIMEOUT_S,
        check=True,
    )

    # then it inherited the variable
    assert child.stdout.strip() == "inherited"


def test_install_is_idempotent() -> None:
    # given os.environ already replaced
    installed = os.environ

    # when install runs again, then the same mapping stays (no scoped mapping wrapped in another)
    environ.install()
    assert os.environ is installed
    assert process_environ() is not installed


def test_copy_copy_of_os_environ_works_as_on_the_real_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a process variable
    monkeypatch.setenv(PROCESS_ONLY, "copied")

    # when os.environ is copied with the copy module
    duplicate = copy.copy(os.environ)

    # then the copy shows the variable
    assert duplicate[PROCESS_ONLY] == "copied"
