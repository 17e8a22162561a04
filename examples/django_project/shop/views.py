import itertools

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from durably.contrib.django import get_durably

from .jobs import daily_report
from .tasks import make_receipt

try:
    from django.tasks.exceptions import TaskResultDoesNotExist
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks.exceptions import TaskResultDoesNotExist

order_ids = itertools.count(1)


@csrf_exempt
@require_POST
def create_order(request):
    order_id = next(order_ids)
    result = make_receipt.enqueue(order_id, request.GET["total"])
    return JsonResponse({"task": result.id, "status": result.status}, status=202)


@require_GET
def task_status(request, result_id):
    try:
        result = make_receipt.get_result(result_id)
    except TaskResultDoesNotExist:
        return JsonResponse({"error": "no such task"}, status=404)
    body = {"status": result.status, "errors": [error.traceback for error in result.errors]}
    if result.status == "SUCCESSFUL":
        body["return_value"] = result.return_value
    return JsonResponse(body)


@csrf_exempt
@require_POST
def create_report(request):
    run = daily_report.trigger({"totals": request.GET.getlist("total")})
    return JsonResponse({"run": run.id}, status=202)


@require_GET
def run_status(request, run_id):
    run = get_durably().get_run(run_id)
    if run is None:
        return JsonResponse({"error": "no such run"}, status=404)
    return JsonResponse({"status": run.status, "output": run.output})
