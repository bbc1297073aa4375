"""Encode domain: transcoding jobs (upload, URL or storage key in; HLS ladder or MP4 out),
encoding profiles as data, assets and their renditions, and the media route that plays them.

WebEncode promised all of this and encoded only the first profile of a job to one MP4 left on
a worker's disk (reference/webencode.md §12). Here every output goes through `Storage`, every
profile (built-in or custom) is really used, and a cancelled job stops its ffmpeg.
"""
