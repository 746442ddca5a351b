"""
`videogen`: the client on the command line. Results go to stdout, progress
and errors to stderr; an error is one line and a non-zero exit, never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO

from videogen_client import REQUEST_FIELDS, Client, Event, Job, VideogenError, __version__

# Exit statuses: an error (the API's, the connection's, a file's), a finished job that did not complete.
EXIT_ERROR = 1
EXIT_JOB_FAILED = 3
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with Client(args.url, user_id=args.user_id, api_key=args.api_key) as client:
            return args.run(client, args)
    except KeyboardInterrupt:
        print("videogen: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        # Anything else too (a malformed --url, a bug): one line, never a traceback.
        print(f"videogen: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, VideogenError) else f"{type(exc).__name__}: {text}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videogen", description="Make videos with a videogen server.")
    parser.add_argument("--version", action="version", version=f"videogen-client {__version__}")
    parser.add_argument("--url", default=os.environ.get("VIDEOGEN_URL"),
                        help="the server, e.g. http://127.0.0.1:8000 (env VIDEOGEN_URL)")
    parser.add_argument("--user-id", default=os.environ.get("VIDEOGEN_USER_ID"), help="env VIDEOGEN_USER_ID")
    parser.add_argument("--api-key", default=os.environ.get("VIDEOGEN_API_KEY"), help="env VIDEOGEN_API_KEY")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", help="submit a prompt; print the job id (or, with -o, the file)")
    generate.add_argument("prompt")
    generate.add_argument("--image", help="the first frame: a path or an https:// URL")
    generate.add_argument("--last-image", help="the last frame: a path or an https:// URL (needs --image)")
    generate.add_argument("--extend", metavar="JOB", help="continue this completed job's video")
    generate.add_argument("--wait", action="store_true", help="wait until it finishes, showing progress on stderr")
    generate.add_argument("-o", "--output", metavar="FILE", help="wait, then download the MP4 here")
    generate.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    generate.add_argument("--idempotency-key", help="retrying with the same key returns the same job")
    for name, kind in REQUEST_FIELDS.items():
        if name == "user_id":
            continue
        flag = "--" + name.replace("_", "-")
        if kind is list:
            generate.add_argument(flag.rstrip("s"), dest=name, action="append", help=f"{name} (repeat for several)")
        else:
            generate.add_argument(flag, dest=name, type=kind, help=name)
    generate.set_defaults(run=run_generate)

    status = commands.add_parser("status", help="print a job as JSON")
    status.add_argument("job_id")
    status.set_defaults(run=lambda client, args: print_json(as_dict(client.job(args.job_id))))

    watch = commands.add_parser("watch", help="print a job's events until it finishes")
    watch.add_argument("job_id")
    watch.set_defaults(run=run_watch)

    download = commands.add_parser("download", help="download a completed job's MP4 (resumes a broken one)")
    download.add_argument("job_id")
    download.add_argument("-o", "--output", metavar="FILE", help="default ./<job_id>.mp4")
    download.set_defaults(run=lambda client, args: print(client.download(args.job_id, args.output)))

    listing = commands.add_parser("list", help="list your completed videos, newest first")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=run_list)

    cancel = commands.add_parser("cancel", help="cancel a pending or running job")
    cancel.add_argument("job_id")
    cancel.set_defaults(run=lambda client, args: print(f"{client.cancel(args.job_id).job_id} cancelled"))

    delete = commands.add_parser("delete", help="delete a job and its files")
    delete.add_argument("job_id")
    delete.set_defaults(run=lambda client, args: client.delete(args.job_id) or print(f"{args.job_id} deleted"))

    models = commands.add_parser("models", help="list the models the server serves")
    models.set_defaults(run=run_models)
    return parser


def run_generate(client: Client, args: argparse.Namespace) -> int:
    params = {name: getattr(args, name) for name in REQUEST_FIELDS if name != "user_id"}
    wait = args.wait or args.output is not None
    bar = Progress(sys.stderr) if wait else None
    job = client.generate(
        args.prompt,
        image=args.image,
        last_image=args.last_image,
        extend_job_id=args.extend,
        idempotency_key=args.idempotency_key,
        **params,
    )
    if not wait:
        print(job.job_id)
        return 0
    print(f"job {job.job_id}", file=sys.stderr)
    try:
        job = client.wait(job.job_id, timeout=args.timeout, on_progress=bar.update)
    finally:
        bar.close()
    if not job.succeeded:
        return finished_badly(job)
    print(client.download(job.job_id, args.output) if args.output else job.job_id)
    return 0


def run_watch(client: Client, args: argparse.Namespace) -> int:
    for event in client.events(args.job_id):
        print(describe(event), flush=True)
        if event.terminal:
            return 0 if event.type == "completed" else finished_badly(event.job)
    return 0


def run_list(client: Client, args: argparse.Namespace) -> int:
    for video in client.videos():
        if args.json:
            print(json.dumps(as_dict(video), default=str))
        else:
            print(f"{video.job_id}\t{video.completed_at:%Y-%m-%d %H:%M}\t{video.file_size}\t{video.prompt}")
    return 0


def run_models(client: Client, args: argparse.Namespace) -> int:
    models = client.models()
    for model in models:
        marker = "*" if model.name == models.default else " "
        print(f"{marker} {model.name}\t{','.join(model.modes)}\t{model.description}")
    return 0


def finished_badly(job: Job) -> int:
    reason = f": {job.error_message}" if job.error_message else ""
    print(f"videogen: job {job.job_id} {job.status}{reason}", file=sys.stderr)
    return EXIT_JOB_FAILED


def describe(event: Event) -> str:
    if event.type == "progress":
        return f"progress {event.progress}% step {event.current_step}/{event.total_steps}"
    if event.type == "queue":
        return f"queue position {event.queue_position}"
    return f"{event.type} {event.status or ''}".rstrip()


def as_dict(value: Any) -> dict:
    import dataclasses

    return json.loads(json.dumps(dataclasses.asdict(value), default=str))


def print_json(value: dict) -> int:
    print(json.dumps(value, indent=2))
    return 0


class Progress:
    """A progress bar on stderr: the queue position while pending, then the steps. Plain lines when not a terminal."""

    WIDTH = 30

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.tty = stream.isatty()
        self.last = ""

    def update(self, event: Event) -> None:
        if event.type == "queue" and event.queue_position is not None:
            line = f"queued: position {event.queue_position}"
        elif event.type == "progress" and event.total_steps:
            done = int(self.WIDTH * (event.current_step or 0) / event.total_steps)
            line = f"[{'#' * done}{'.' * (self.WIDTH - done)}] {event.progress}% step {event.current_step}/{event.total_steps}"
        elif event.type == "status":
            line = event.status or ""
        else:
            return
        if line == self.last:
            return
        if self.tty:
            self.stream.write("\r" + line.ljust(len(self.last)))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.last = line

    def close(self) -> None:
        if self.tty and self.last:
            self.stream.write("\n")
            self.stream.flush()
