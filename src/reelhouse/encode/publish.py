"""Publishing a finished encode through a publisher plugin: one job per publish
(`encode.publish`), one task with the engine's retries and backoff."""

from __future__ import annotations

from typing import Any

from reelhouse.core.jobs import control
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.errors import PermanentError
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.security.audit import master_keys_of
from reelhouse.core.security.keys import MasterKeys
from reelhouse.encode import assets as asset_store
from reelhouse.encode.media import playback_link
from reelhouse.encode.plugins import PluginError, PluginState
from reelhouse.encode.publishers import PublishRequest
from reelhouse.encode.service import EncodeService, download_to

KIND_PUBLISH = "encode.publish"
JOB_KIND_PUBLISH = "encode.publish"


class Publishing:
    def __init__(self, service: EncodeService, plugins: PluginState) -> None:
        self.service = service
        self.plugins = plugins

    def _keyring(self) -> Any:
        engine = self.service.engine
        return (master_keys_of(engine) or MasterKeys.from_settings(self.service.runtime.settings)).keyring()

    async def _publisher(self, platform: str) -> tuple[str, Any]:
        plugin_id = f"publisher-{platform}"
        try:
            plugin = self.plugins.registry.get(plugin_id)
        except PluginError:
            raise PluginError(400, f"no publisher plugin {plugin_id!r}") from None
        if plugin.type != "publisher" or plugin.obj is None or not hasattr(plugin.obj, "publish"):
            raise PluginError(400, f"plugin {plugin_id} is not a usable publisher ({plugin.error or 'no publish()'})")
        if not (await self.plugins.state(plugin_id))["is_enabled"]:
            raise PluginError(400, f"publisher plugin {plugin_id} is disabled")
        return plugin_id, plugin.obj

    async def submit(self, job_id: int, body: dict[str, Any], actor: str) -> dict[str, Any]:
        engine = self.service.engine
        job = await control.get_job(engine, job_id)
        if job is None:
            raise PluginError(404, f"job {job_id} not found")
        if job["status"] != "completed":
            raise PluginError(400, f"job {job_id} is {job['status']}, not completed")
        asset = await asset_store.get_asset(engine, job_id=job_id)
        if asset is None or not asset["master_key"]:
            raise PluginError(400, f"job {job_id} has no output")
        output_key = body.get("output_key") or None
        keys = {r["key"] for r in asset["renditions"]} | {asset["master_key"]}
        if output_key is not None and output_key not in keys:
            raise PluginError(400, "output_key is not one of the job's outputs")
        if output_key is None and not str(asset["master_key"]).endswith(".mp4"):
            mp4 = [r["key"] for r in asset["renditions"] if str(r["key"]).endswith(".mp4")]
            if not mp4:
                raise PluginError(400, "publishing needs an MP4 output (an mp4 profile) or output_key")
            output_key = mp4[0]
        plugin_id, _ = await self._publisher(str(body["platform"]))
        token = str(body.get("access_token") or "")
        sealed = self._keyring().encrypt(token, f"encode/publish/{job_id}") if token else None
        enqueued = await TaskQueue(engine).enqueue(
            KIND_PUBLISH,
            {
                "job_id": job_id,
                "plugin": plugin_id,
                "title": str(body.get("title") or "")[:200],
                "description": str(body.get("description") or "")[:5000],
                "output_key": output_key or asset["master_key"],
                "output_prefix": asset["output_prefix"],
                "access_token_enc": sealed,
                "requested_by": actor,
            },
            job_kind=JOB_KIND_PUBLISH,
            max_attempts=5,
        )
        return {
            "success": True,
            "message": f"publishing through {plugin_id} as job {enqueued.job_id}",
            "publish_job_id": str(enqueued.job_id),
            "task_id": enqueued.task_id,
        }

    async def run(self, ctx: TaskContext) -> dict[str, Any]:
        payload = ctx.payload
        plugin_id = payload["plugin"]
        _, publisher = await self._publisher(plugin_id.removeprefix("publisher-"))
        token = ""
        if payload.get("access_token_enc"):
            token = self._keyring().decrypt_text(payload["access_token_enc"], f"encode/publish/{payload['job_id']}")
        key = payload["output_key"]
        storage = self.service.storage()
        async with self.service.scratch("publish") as tmp:
            target = tmp / key.rsplit("/", 1)[-1]
            try:
                await download_to(storage, key, target)
            except Exception as exc:
                raise PermanentError(f"the output {key[:200]} cannot be read: {type(exc).__name__}") from exc
            link, _ = playback_link(self.service, payload["output_prefix"], key)
            request = PublishRequest(
                job_id=int(payload["job_id"]),
                file=target,
                file_url=link,
                title=payload["title"],
                description=payload["description"],
                access_token=token,
                config=(await self.plugins.state(plugin_id))["config"],
            )
            await ctx.check_lease("publish")
            result = await publisher.publish(request)
        return {"plugin": plugin_id, "success": True, **result}
