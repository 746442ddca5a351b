"""
The HTTP API: views, serializers and schema, the acting user, API keys and
throttles, downloads, errors, image inputs, the event stream, the playground.
"""
