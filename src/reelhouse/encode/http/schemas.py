"""Request and response bodies of encode's routes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reelhouse.core.http.bounds import SAFE_NAME_PATTERN, StatusFilter, StorageKeyText, UrlText

ProfileName = Annotated[str, Field(pattern=SAFE_NAME_PATTERN, max_length=64)]
PresetName = Annotated[str, Field(max_length=32)]
PrefixText = Annotated[str, Field(max_length=512)]
AssetStatus = Annotated[Literal["encoding", "ready", "failed"] | None, StatusFilter]


class JobBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_url: UrlText | None = Field(None, description="http(s) URL fetched with yt-dlp (public addresses only)")
    source_key: StorageKeyText | None = Field(None, description="key of an object already in storage")
    source_type: Literal["url", "upload", "stream", "restream", ""] | None = Field(
        None, description="WebEncode's field; only url (or empty) is meaningful with source_url"
    )
    profile: ProfileName | None = None
    profiles: list[ProfileName] | None = Field(None, max_length=16, description="WebEncode's field, all encoded")
    preset: PresetName | None = None
    output_prefix: PrefixText | None = Field(None, description="relative to ENCODE_OUTPUT_PREFIX")


class UploadFields(BaseModel):
    """The form fields beside the multipart `file`."""

    model_config = ConfigDict(extra="ignore")

    profile: ProfileName | None = None
    preset: PresetName | None = None
    output_prefix: PrefixText | None = None


JOB_BODY_DOC = {
    "requestBody": {
        "content": {
            "application/json": {"schema": JobBody.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        **UploadFields.model_json_schema()["properties"],
                    },
                }
            },
        }
    },
}
PROFILE_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["name", "renditions"],
                    "description": "a profile: name, kind (hls|mp4), renditions (see GET /v1/profiles)",
                }
            }
        },
    }
}


class SourceView(BaseModel):
    kind: str
    key: str | None = None
    url: str | None = None


class JobLinks(BaseModel):
    job: str
    outputs: str


class UploadView(BaseModel):
    key: str
    size_bytes: int
    filename: str | None


class CreatedJob(BaseModel):
    model_config = ConfigDict(extra="allow")

    job_id: int
    task_id: int
    status: str
    first_task: str
    profile: str
    profiles: list[str] = Field(default_factory=list, description="every profile the job encodes, first is `profile`")
    output_prefix: str
    source: SourceView
    links: JobLinks
    upload: UploadView | None = None


class RenditionView(BaseModel):
    name: str
    width: int | None
    height: int | None
    bandwidth: int | None
    codecs: str | None
    key: str
    url: str
    content_type: str | None
    segment_count: int | None
    size_bytes: int | None


class SegmentsView(BaseModel):
    pieces: int = Field(description="(profile, rung, piece) tasks of the job")
    pieces_done: int
    media_seconds: float = Field(description="media seconds to encode over every rung and piece")
    progress: float = Field(description="0..1 of those media seconds encoded")
    eta_seconds: float | None = Field(description="at the combined rate of every worker so far")


class AssetView(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int
    job_id: int | None
    status: str
    kind: str
    profile: str | None
    output_prefix: str
    source: SourceView
    master_key: str | None
    master_url: str | None
    duration: float | None
    width: int | None
    height: int | None
    size_bytes: int | None
    error: str | None
    renditions: list[RenditionView]
    created_at: str | None
    updated_at: str | None
    completed_at: str | None
    segments: SegmentsView | None = Field(None, description="a segment-parallel job's pieces (job outputs only)")


class PlaybackLink(BaseModel):
    url: str = Field(description="path of a signed, expiring link that plays the whole ladder")
    expires_at: int = Field(description="unix time")


class ProfileView(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    kind: str
    builtin: bool
    definition: dict[str, Any]
    created_by: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    error: str | None = Field(None, description="set when a stored profile no longer validates")
