from django.core.management.base import BaseCommand, CommandError
from rest_framework.exceptions import ValidationError

from jobs.models import ApiKey
from jobs.api.views import clean_user_id


class Command(BaseCommand):
    help = (
        "Create an API key for a user_id (VIDEOGEN_AUTH=api_key). The key is printed once, alone on "
        "the last line; only its hash is stored. List and revoke keys in the admin."
    )

    def add_arguments(self, parser):
        parser.add_argument("--user-id", required=True, help="The user the key acts as.")
        parser.add_argument("--operator", action="store_true", help="Act for any user_id, and for all users when none is given.")
        parser.add_argument("--name", default="", help="What the key is for, shown in the admin.")
        parser.add_argument(
            "--scope", action="append", default=[], choices=ApiKey.SCOPES, dest="scopes",
            help="Allow more: 'priority' submits jobs with priority high. Repeat for several.",
        )

    def handle(self, *args, user_id: str, operator: bool, name: str, scopes: list[str], **options):
        try:
            user_id = clean_user_id(user_id)
        except ValidationError as exc:
            raise CommandError(exc.detail["user_id"][0])
        if len(name) > 100:
            raise CommandError("--name has at most 100 characters.")
        key, text = ApiKey.issue(user_id=user_id, operator=operator, name=name, scopes=scopes)
        scope = "operator key" if operator else "key"
        with_scopes = f" with scopes {', '.join(key.scopes)}" if key.scopes else ""
        self.stderr.write(
            f"Created {scope} {key.prefix} for user_id {user_id!r}{with_scopes}. Store it now: it is not shown again."
        )
        self.stdout.write(text)
