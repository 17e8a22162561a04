"""A durably job, registered because the app is installed (``jobs.py`` discovery)."""

from durably.contrib.django import get_durably

durably = get_durably()


@durably.job("testapp-double")
def double(step, input):
    return step.run("double", lambda: input * 2)
