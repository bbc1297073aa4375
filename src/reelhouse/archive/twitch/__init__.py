"""Twitch providers: Helix (VOD discovery), OAuth, and the IRC chat wire layer.

Chat: `irc_message` parses IRCv3 lines into typed events, `irc_client` keeps one
connection joined to many channels and reports every disconnected interval as a `Gap`.
Submodules are imported explicitly so that using one provider does not load the others.
"""
