"""The requests under way in a process, and the listeners told when it turns busy and idle."""

from __future__ import annotations

from sentiment_api.serving.activity import Activity


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def busy(self) -> None:
        self.calls.append("busy")

    def idle(self) -> None:
        self.calls.append("idle")


def test_listeners_hear_only_the_turns_between_none_and_some() -> None:
    activity, recorder = Activity(), Recorder()
    activity.listen(recorder)
    activity.enter()
    activity.enter()  # a second request: still busy, nothing to say
    activity.leave()
    activity.leave()
    activity.enter()
    during = activity.requests
    activity.forget(recorder)
    activity.leave()  # forgotten: not told
    activity.forget(recorder)  # forgetting twice is harmless

    assert recorder.calls == ["busy", "idle", "busy"]
    assert during == 1 and activity.requests == 0
