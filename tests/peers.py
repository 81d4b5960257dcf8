"""Real MQTT brokers for the integration tests: mosquitto and Debian's ActiveMQ.

Each runs as a child process on free loopback ports, can be stopped and started again on
the same port (the broker-loss tests do that), and is stopped by its own PID.

ActiveMQ 5.x speaks MQTT 3.1.1 only. Debian's package needs three jars from
/usr/share/java linked into the instance's lib/ before its MQTT connector works (see
../shared/peers.md), logs through log4j 1.2, and is run in the foreground with a small
heap and ``persistent="false"``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from gearshift.settings import MqttSettings
from gearshift.sim.broker import free_port, start_mosquitto, wait_for_port

ACTIVEMQ_JAR = Path("/usr/share/activemq/bin/activemq.jar")
ACTIVEMQ_LIBS = ("mqtt-client.jar", "hawtdispatch.jar", "hawtdispatch-transport.jar")
ACTIVEMQ_APT = "apt-get install -y activemq libmqtt-client-java"

ACTIVEMQ_XML = """\
<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans
    http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
    http://activemq.apache.org/schema/core
    http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false"
          brokerName="gearshift-test" persistent="false" dataDirectory="{data}"
          schedulerSupport="false" advisorySupport="false">
    <systemUsage>
      <systemUsage>
        <memoryUsage><memoryUsage limit="64 mb"/></memoryUsage>
        <tempUsage><tempUsage limit="256 mb"/></tempUsage>
      </systemUsage>
    </systemUsage>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:{mqtt}"/>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:{stomp}"/>
    </transportConnectors>
  </broker>
</beans>
"""

LOG4J = """\
log4j.rootLogger=WARN, out
log4j.appender.out=org.apache.log4j.ConsoleAppender
log4j.appender.out.layout=org.apache.log4j.PatternLayout
log4j.appender.out.layout.ConversionPattern=%d %-5p %c - %m%n
"""


def activemq_missing() -> str | None:
    """None when ActiveMQ with MQTT can run here, else what is missing."""
    if not ACTIVEMQ_JAR.exists():
        return "activemq"
    for jar in ACTIVEMQ_LIBS:
        if not (Path("/usr/share/java") / jar).exists():
            return jar
    return None


def stop_process(process: subprocess.Popen[bytes], *, grace: float) -> None:
    """SIGTERM, then SIGKILL if it has not gone within ``grace`` seconds."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@dataclass
class Broker:
    """A broker we started: (kind, host, port), plus stop/start on the same port."""

    kind: str  # mosquitto | activemq
    directory: Path
    port: int
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def protocol(self) -> str:
        return "3.1.1" if self.kind == "activemq" else "5"

    def settings(self, prefix: str | None = None, **overrides: object) -> MqttSettings:
        """Daemon MQTT settings for this broker, with a fresh topic prefix by default."""
        values: dict[str, object] = {
            "host": self.host, "port": self.port, "protocol": self.protocol,
            "prefix": prefix or f"gs-test/{uuid.uuid4().hex[:10]}",
            "reconnect_min": 0.2, "reconnect_max": 1.0, "catch_up_min": 0.05}
        values.update(overrides)
        return MqttSettings.model_validate(values)

    def start(self) -> None:
        if self.kind == "mosquitto":
            self.process, _ = start_mosquitto(self.directory, port=self.port)
            return
        self.process = _start_activemq(self.directory, mqtt=self.port,
                                       stomp=self.extra["stomp"])

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, grace=15)

    def log(self) -> str:
        name = "mosquitto.log" if self.kind == "mosquitto" else "activemq.log"
        path = self.directory / name
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def mosquitto_broker(directory: Path) -> Broker:
    broker = Broker("mosquitto", directory, free_port())
    broker.start()
    return broker


def _start_activemq(directory: Path, *, mqtt: int, stomp: int) -> subprocess.Popen[bytes]:
    conf, lib, data = directory / "conf", directory / "lib", directory / "data"
    for folder in (conf, lib, data):
        folder.mkdir(parents=True, exist_ok=True)
    for jar in ACTIVEMQ_LIBS:
        link = lib / jar
        if not link.exists():
            link.symlink_to(Path("/usr/share/java") / jar)
    (conf / "activemq.xml").write_text(ACTIVEMQ_XML.format(data=data, mqtt=mqtt, stomp=stomp))
    (conf / "log4j.properties").write_text(LOG4J)
    java = os.environ.get("JAVA", "java")
    command = [java, "-Xms32m", "-Xmx160m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
               "-Djava.awt.headless=true",
               "-Dactivemq.home=/usr/share/activemq", f"-Dactivemq.base={directory}",
               f"-Dactivemq.conf={conf}", f"-Dactivemq.data={data}",
               f"-Dlog4j.configuration=file:{conf / 'log4j.properties'}",
               "-jar", str(ACTIVEMQ_JAR), "start", f"xbean:file:{conf / 'activemq.xml'}"]
    log = (directory / "activemq.log").open("ab")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", mqtt, timeout=60)
    except TimeoutError:
        process.kill()
        raise
    # The port opens a moment before the MQTT transport is wired; give it that moment.
    time.sleep(0.2)
    return process


def activemq_broker(directory: Path) -> Broker:
    broker = Broker("activemq", directory, free_port(), extra={"stomp": free_port()})
    broker.start()
    return broker
