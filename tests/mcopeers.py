"""Real MCollective nodes for the tests: N ``mcollectived`` processes on one ActiveMQ.

Each node has a directory of its own (config, facts YAML, log, libdir) and its own
identity, and is started and stopped by its PID. Debian's ``mcollective`` 2.12.5 runs on
Ruby 3.1, where its ``yaml_facts`` plugin calls ``YAML.safe_load`` with positional
arguments that Psych 4 no longer takes ("wrong number of arguments (given 4, expected
1)"), so facts come back empty; each node's libdir carries a small facts plugin of its
own (``gsyaml``) that reads the YAML with the current Psych API and reloads it when the
file changes, as ``yaml_facts`` does.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from peers import stop_process

MCOLLECTIVED = "/usr/sbin/mcollectived"
MCO_APT = "apt-get install -y mcollective mcollective-client ruby-stomp"
PSK = "gearshift-test-psk"

FACTS_PLUGIN = """\
module MCollective
  module Facts
    # yaml_facts for Ruby 3.1 / Psych 4: safe_load with keyword arguments.
    class Gsyaml_facts < Base
      require "yaml"

      def initialize
        @mtimes = {}
        super
      end

      def load_facts_from_source
        facts = {}
        Config.instance.pluginconf["yaml"].split(File::PATH_SEPARATOR).each do |file|
          begin
            facts.merge!(YAML.safe_load(File.read(file), permitted_classes: [Symbol],
                                        aliases: true) || {})
          rescue Exception => e
            Log.error("Failed to load yaml facts from #{file}: #{e.class}: #{e}")
          end
        end
        facts
      end

      def force_reload?
        Config.instance.pluginconf["yaml"].split(File::PATH_SEPARATOR).any? do |file|
          mtime = File.stat(file).mtime
          changed = @mtimes[file] && mtime != @mtimes[file]
          @mtimes[file] = mtime
          changed
        end
      end
    end
  end
end
"""

SERVER_CFG = """\
main_collective = {collective}
collectives = {collective}
libdir = {lib}:/usr/lib/ruby/vendor_ruby
logfile = {log}
loglevel = {loglevel}
daemonize = 0
identity = {identity}
securityprovider = psk
plugin.psk = {psk}
connector = activemq
plugin.activemq.pool.size = 1
plugin.activemq.pool.1.host = 127.0.0.1
plugin.activemq.pool.1.port = {port}
plugin.activemq.pool.1.user = mcollective
plugin.activemq.pool.1.password = marionette
plugin.activemq.initial_reconnect_delay = 0.1
plugin.activemq.max_reconnect_delay = 1.0
factsource = gsyaml
plugin.yaml = {facts}
fact_cache_time = 300
registerinterval = 0
"""


def mcollective_missing() -> str | None:
    """None when mcollectived can run here, else what is missing."""
    if not Path(MCOLLECTIVED).exists() or shutil.which("ruby") is None:
        return "mcollective"
    return None


def node_facts(identity: str, *, profile: str = "small", active: int = 10,
               max_active: int = 60, district: str = "d-1", **extra: object) -> dict[str, object]:
    """OpenShift node facts as Facter writes them to /etc/mcollective/facts.yaml."""
    facts: dict[str, object] = {
        "node_profile": profile, "max_active_gears": max_active,
        "gears_total_count": active + 5, "gears_active_count": active,
        "gears_idle_count": 5, "gears_stopped_count": 0, "gears_started_count": active,
        "district_uuid": district, "district_active": True, "public_hostname": identity,
        "active_capacity": round(active * 100 / max_active, 1) if max_active else "NaN",
        "kernel": "Linux",
    }
    facts.update(extra)
    return facts


@dataclass
class McoNode:
    """One mcollectived with its own directory; stop/start keep its identity and files."""

    identity: str
    directory: Path
    port: int
    psk: str = PSK
    collective: str = "mcollective"
    loglevel: str = "warn"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def facts_file(self) -> Path:
        return self.directory / "facts.yaml"

    def write_facts(self, facts: dict[str, object]) -> None:
        temporary = self.facts_file.with_suffix(".tmp")
        temporary.write_text(yaml.safe_dump(facts))
        os.replace(temporary, self.facts_file)

    def start(self) -> None:
        lib = self.directory / "lib" / "mcollective" / "facts"
        lib.mkdir(parents=True, exist_ok=True)
        (lib / "gsyaml_facts.rb").write_text(FACTS_PLUGIN)
        config = self.directory / "server.cfg"
        config.write_text(SERVER_CFG.format(
            collective=self.collective, lib=self.directory / "lib", log=self.directory / "mco.log",
            loglevel=self.loglevel, identity=self.identity, psk=self.psk, port=self.port,
            facts=self.facts_file))
        config.chmod(0o600)
        out = (self.directory / "stdout.log").open("ab")
        self.process = subprocess.Popen(
            [MCOLLECTIVED, "--config", str(config), "--no-daemonize"], stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, grace=10)

    def log(self) -> str:
        path = self.directory / "mco.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def start_nodes(directory: Path, *, count: int, port: int, prefix: str = "node",
                psk: str = PSK, facts: dict[str, dict[str, object]] | None = None
                ) -> list[McoNode]:
    """``count`` mcollectived processes named PREFIX-01..., each with default facts."""
    nodes = []
    for i in range(1, count + 1):
        identity = f"{prefix}-{i:02d}.example.com"
        node = McoNode(identity, directory / identity, port, psk=psk)
        node.directory.mkdir(parents=True, exist_ok=True)
        node.write_facts((facts or {}).get(identity) or node_facts(identity))
        node.start()
        nodes.append(node)
    return nodes


def stop_nodes(nodes: list[McoNode]) -> None:
    for node in nodes:
        if node.process is not None:
            node.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for node in nodes:
        process = node.process
        if process is None:
            continue
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        node.process = None
