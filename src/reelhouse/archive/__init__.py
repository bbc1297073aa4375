"""Archive domain: watches Twitch channels, downloads their VODs, records live chat and
uploads to YouTube (what vod-tender does, see docs/ARCHITECTURE.md)."""
