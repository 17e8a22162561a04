"""Django tasks: ``enqueue()`` makes a durably run, ``manage.py durably_worker`` runs it."""

try:
    from django.tasks import task
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import task


@task(queue_name="receipts", priority=10)
def make_receipt(order_id: int, total: str) -> dict[str, str]:
    return {"order": str(order_id), "receipt": f"Order {order_id}: {total} EUR, paid"}
