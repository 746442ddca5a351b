from django.contrib import admin

from jobs.models import VideoGenerationJob


@admin.register(VideoGenerationJob)
class VideoGenerationJobAdmin(admin.ModelAdmin):
    list_display = ["id", "user_id", "status", "progress", "model_name", "submitted_at", "completed_at"]
    list_filter = ["status", "model_name"]
    search_fields = ["user_id", "prompt"]
    readonly_fields = [field.name for field in VideoGenerationJob._meta.fields]
