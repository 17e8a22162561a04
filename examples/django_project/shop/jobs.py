"""durably's own jobs, made of steps; found here because the app is installed."""

from durably.contrib.django import get_durably

durably = get_durably()


@durably.job("daily-report")
def daily_report(step, input):
    totals = step.run("load", lambda: [float(total) for total in input["totals"]])
    return step.run("sum", lambda: {"orders": len(totals), "revenue": sum(totals)})
