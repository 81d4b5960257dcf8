"""``gearshift agent``: the node side. It tells gearshift what the node holds, and runs the
few commands gearshift may ask of it.

Facts
-----
The agent reads its facts from one source (``facts.kind`` in its config):

* ``openshift``: the node's Facter YAML (``/etc/mcollective/facts.yaml``, rewritten every
  minute by OpenShift's cron job; flat strings such as ``max_active_gears: "60"``);
* ``containers``: gear counts from ``podman`` or ``docker ps --all --format json``
  (running → active/started, exited/created → stopped, paused → idle), with the node
  profile and ``max_active_gears`` from the config;
* ``file``: a JSON or YAML file holding a ``gearshift.node.facts/1`` message or flat facts.

It publishes them as retained JSON ``gearshift.node.facts/1`` (QoS 1) on
``{prefix}/nodes/{identity}/facts`` whenever they change (checked every ``poll``) and at
least every ``interval``, with a rising ``seq`` and the current ``ts``. On connecting it
publishes a retained ``online`` on ``{prefix}/nodes/{identity}/status``; its MQTT last
will puts a retained ``offline`` there if it dies, and a clean stop publishes ``offline``
itself.

Commands
--------
Requests arrive on ``{prefix}/nodes/{identity}/command`` (QoS 1). Payload::

    {"command": "deactivate", "args": {"district": "513b5050", "host": "node1.example.com"},
     "request_id": "2f8c..."}

Only commands named in the config's ``commands:`` allowlist run, each mapped to a command
template such as ``oo-admin-ctl-district -c deactivate-node -u {district} -i {host}``.
The template is split with ``shlex`` once, at load time; every ``{name}`` is replaced by
the whole argument, inside one argv element, and the result runs with
``asyncio.create_subprocess_exec`` (never a shell) under ``command_timeout``. Arguments
must be strings of at most 253 characters from ``[A-Za-z0-9._:@%+=,-]`` not starting with
``-``; an argument the template does not use, or a placeholder with no argument, refuses
the request. The child's environment is the agent's minus every ``GEARSHIFT_*`` variable.

The reply (QoS 1) goes to the request's MQTT 5 response topic, carrying the request's
correlation data; a request without a response topic (MQTT 3.1.1 brokers such as
ActiveMQ 5.x) is answered on ``{prefix}/nodes/{identity}/reply`` and matched by
``request_id``. Payload::

    {"request_id": "2f8c...", "command": "deactivate", "ok": true, "exit_code": 0,
     "stdout": "...", "stderr": "", "error": null}

``ok`` is true only when the command ran and exited 0; ``exit_code`` is null when it
never ran or was killed at its timeout; ``stdout`` and ``stderr`` keep the first 64 KiB
each. A command not in the allowlist is refused with ``ok: false``,
``error: "not allowed"`` and logged; so is a malformed request (``error`` says what is
wrong). A retained command message is ignored (it would run again on every reconnect).
A repeated ``request_id`` (QoS 1 may deliver twice) does not run the command again: the
first reply is sent again, or nothing while the first run is still going.
"""
