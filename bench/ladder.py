"""
A URLconf for `bench/handler.py --ladder`: a status poll built up one step
at a time, each step a view of its own, so that the CPU each step adds to a
poll can be read off between the bare view and GET /job:

    /ladder/select-1           a database round trip: `SELECT 1`
    /ladder/read/<id>          the poll's compiled read, the row converted, no model instance
    /ladder/model/<id>         VideoGenerationJob.objects.visible(): the row as a model instance
    /ladder/plain/<id>         that, JobStatusSerializer and a JsonResponse: the poll as a plain Django view
    /ladder/apiview/<id>       the same in a DRF APIView (DRF's request, negotiation, rendering)

GET /api/v1/job/<id> is the last step: the viewset (routing under
/api/v1/, the user_id checks, get_object()). Measurement only; not served
by the project.
"""

import uuid

from django.db import connection
from django.http import JsonResponse
from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.models import VideoGenerationJob, _visible_to_user
from jobs.api.serializers import JobStatusSerializer


def select_1(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return JsonResponse({"ok": True})


def read(request, job_id):
    _visible_to_user.first(connection.alias, user=request.GET["user_id"], job=uuid.UUID(job_id))
    return JsonResponse({"ok": True})


def model(request, job_id):
    VideoGenerationJob.objects.visible(request.GET["user_id"], uuid.UUID(job_id))
    return JsonResponse({"ok": True})


def plain(request, job_id):
    job = VideoGenerationJob.objects.visible(request.GET["user_id"], uuid.UUID(job_id))
    return JsonResponse(JobStatusSerializer(job, context={"request": request}).data)


class InAPIView(APIView):
    def get(self, request, job_id):
        job = VideoGenerationJob.objects.visible(request.query_params["user_id"], uuid.UUID(job_id))
        return Response(JobStatusSerializer(job, context={"request": request}).data)


ladder = [
    path("select-1", select_1),
    path("read/<str:job_id>", read),
    path("model/<str:job_id>", model),
    path("plain/<str:job_id>", plain),
    path("apiview/<str:job_id>", InAPIView.as_view()),
]

urlpatterns = [path("ladder/", include(ladder)), path("", include("videogen.urls"))]
