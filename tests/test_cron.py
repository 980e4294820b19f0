import engine.cron


def test_x():
    assert engine.cron
