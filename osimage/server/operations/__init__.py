"""What an operator runs beside the API: health check, metrics, policy file, notifications.

Each module is imported only by the server (`osimage.server.app`), never by the SDK.
"""
