from django.urls import path
from shop import views

urlpatterns = [
    path("orders", views.create_order),
    path("tasks/<str:result_id>", views.task_status),
    path("reports", views.create_report),
    path("runs/<str:run_id>", views.run_status),
]
