"""The walk of one create-workspace request, from HTTP to the listing: which of our modules it runs, in which
packages, and which calls cross from one package to another. A diagnostic for the code's shape (no goal, no
baseline): run it before and after a change of layout to compare.

    python -m bench.walk [--show]

The api, relay and projector roles run in this process, as `mechamental dev` runs them, on scratch servers
(or those MECHAMENTAL_BENCH_DATABASE_URL / MECHAMENTAL_BENCH_NATS_URL name). After a warm-up create, every
call into our own code is recorded, in every thread, from the POST until the listing shows the workspace.
Background loops that happen to run in that window (the token refresh, the cache's heartbeat) are recorded
too: `--show` lists every module and crossing, so what belongs to the walk can be told from what does not.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from bench import harness

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("domain", "eventstore", "commands", "projections", "pipeline", "executor", "scheduler", "activity", "api")


class Recorder:
    def __init__(self) -> None:
        self.active = False
        self.modules: Counter[str] = Counter()
        self.edges: Counter[tuple[str, str]] = Counter()  # (caller module, callee module), across packages
        self._lock = threading.Lock()

    def profile(self, frame, event, _arg) -> None:
        if not self.active or event != "call":
            return
        callee = module_of(frame.f_code.co_filename)
        if callee is None:
            return
        caller = self._our_caller(frame.f_back)
        with self._lock:
            self.modules[callee] += 1
            if caller is not None and package_of(caller) != package_of(callee):
                self.edges[(caller, callee)] += 1

    @staticmethod
    def _our_caller(frame):
        """The nearest frame of our own code below this call: a call through a library (Litestar calling a
        handler, asyncio running a task) counts as a call from the code that handed it over, if any is on the
        stack."""
        while frame is not None:
            if (module := module_of(frame.f_code.co_filename)) is not None:
                return module
            frame = frame.f_back
        return None


def module_of(filename: str) -> str | None:
    path = Path(filename)
    try:
        relative = path.resolve().relative_to(ROOT)
    except ValueError:
        return None
    if relative.parts[0] not in (*PACKAGES, "mechamental") or relative.suffix != ".py":
        return None
    return ".".join(relative.with_suffix("").parts).removesuffix(".__init__")


def package_of(module: str) -> str:
    return module.partition(".")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--show", action="store_true", help="list every module and crossing")
    args = parser.parse_args()
    recorder = Recorder()
    with harness.servers() as (server_url, nats_url), harness.scratch_database(server_url) as database_url:
        data_dir = Path(harness.tempfile.mkdtemp(prefix="mm-walk-"))
        env = harness.role_environment(database_url, nats_url, data_dir)
        harness.migrate(env)
        from mechamental.settings import Settings

        settings = Settings.from_env(env)
        threading.setprofile(recorder.profile)
        sys.setprofile(recorder.profile)
        roles = InProcessRoles(settings)
        roles.start()
        try:
            token = settings.root_token
            with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=30) as client:
                client.headers["Authorization"] = f"Bearer {token}"
                create_and_see(client, "warm-up")  # first calls import and compile what the walk then runs
                time.sleep(1.0)
                recorder.active = True
                create_and_see(client, "walk")
                recorder.active = False
        finally:
            sys.setprofile(None)
            threading.setprofile(None)
            roles.stop()
    ours = sorted(recorder.modules)
    packages = sorted({package_of(m) for m in ours})
    print(f"modules: {len(ours)} in {len(packages)} packages ({', '.join(packages)})")
    print(f"calls crossing packages: {len(recorder.edges)} distinct (caller module -> callee module)")
    package_edges = sorted({(package_of(a), package_of(b)) for a, b in recorder.edges})
    print(f"package edges: {len(package_edges)}: " + ", ".join(f"{a}->{b}" for a, b in package_edges))
    if args.show:
        for module in ours:
            print(f"  {recorder.modules[module]:>6}  {module}")
        for (caller, callee), count in sorted(recorder.edges.items()):
            print(f"  {count:>6}  {caller} -> {callee}")


def create_and_see(client: httpx.Client, name: str) -> None:
    created = client.post("/v1/orgs/walk/workspaces", json={"name": name})
    created.raise_for_status()
    position = created.headers["X-Event-Position"]
    listing = client.get("/v1/orgs/walk/workspaces", headers={"X-Min-Position": position})
    listing.raise_for_status()
    assert any(w["name"] == name for w in listing.json()["workspaces"]), listing.text


class InProcessRoles:
    """api, relay and projector in one background event loop, as `mechamental dev` runs them."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        from mechamental.bootstrap import run_roles

        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await run_roles(self.settings, {"api", "relay", "projector"}, self._stop, on_ready=self.ready.set)

        asyncio.run(main())

    def start(self) -> None:
        self._thread.start()
        if not self.ready.wait(60):
            raise RuntimeError("the roles did not start within 60 s")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


if __name__ == "__main__":
    main()
