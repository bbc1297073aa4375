"""Wire-level fakes of the third-party services reelhouse cannot run in tests (Twitch, YouTube).

Each fake is a real server on 127.0.0.1 that follows the provider's documented wire format, so
the production clients are exercised over real sockets instead of being patched.
"""
