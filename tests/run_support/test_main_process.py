"""`on_main_process`: rank 0 runs the work, every rank returns its result or raises its error."""

from types import SimpleNamespace

import accelerate.utils
import pytest

from run_support.main_process import on_main_process


def test_the_main_process_runs_it_and_gets_the_result_or_the_error():
    main = SimpleNamespace(is_main_process=True, num_processes=1)
    assert on_main_process(main, lambda: {"repo": "org/x"}) == {"repo": "org/x"}
    with pytest.raises(FileExistsError, match="checkpoints"):
        on_main_process(main, lambda: (_ for _ in ()).throw(FileExistsError("checkpoints in the way")))


def test_other_ranks_do_not_run_it_and_receive_the_main_process_outcome(monkeypatch):
    calls = []
    other = SimpleNamespace(is_main_process=False, num_processes=2)

    def broadcast(outcome, from_process=0):  # what rank 0 sent
        outcome[0] = sent[0]
        return outcome

    monkeypatch.setattr(accelerate.utils, "broadcast_object_list", broadcast)
    sent = [("ok", "org/x")]
    assert on_main_process(other, lambda: calls.append("ran")) == "org/x"
    sent = [("error", PermissionError("no write access to org/x"))]
    with pytest.raises(PermissionError, match="no write access"):
        on_main_process(other, lambda: calls.append("ran"))
    assert calls == []  # the work ran on rank 0 only
