"""User code the SDK tests deploy (`processor_type: python`): an echo that says who answered.

Each instance draws a random id in initialize(), so a client that only sees response
bodies (as the official SDKs do) can still tell which instance served each call.

Bodies:
  "flaky:<key>:<n>"  500 for the first n calls with that key, then 200 {"attempts": calls}
  "fail400:<key>"    400 every time (counted)
  "count:<key>"      200 {"calls": how many calls <key> has seen on this instance}
  "sleep:<ms>:<x>"   waits <ms> milliseconds, then 200 {"instance": id, "slept": x}
  "exit:<x>"         the instance's process exits at once (a poison request: no answer)
  anything else      200 {"instance": id, "upper": body upper-cased, "length": bytes}
"""

import json
import os
import threading
import time
import uuid


class EchoProcessor:
    def initialize(self):
        self.instance_id = uuid.uuid4().hex[:12]
        self.calls = {}
        self.lock = threading.Lock()

    def _count(self, key):
        with self.lock:
            self.calls[key] = self.calls.get(key, 0) + 1
            return self.calls[key]

    def process(self, data):
        text = data.decode("utf-8", errors="replace")
        if text.startswith("flaky:"):
            _, key, failures = text.split(":")
            attempt = self._count(key)
            if attempt <= int(failures):
                return json.dumps({"message": f"flaky failure {attempt} of {failures}"}), 500
            return json.dumps({"attempts": attempt, "instance": self.instance_id}), 200
        if text.startswith("fail400:"):
            self._count(text.split(":")[1])
            return json.dumps({"message": "this body is refused on purpose"}), 400
        if text.startswith("exit:"):
            os._exit(1)
        if text.startswith("sleep:"):
            _, ms, rest = text.split(":", 2)
            time.sleep(int(ms) / 1000)
            return json.dumps({"instance": self.instance_id, "slept": rest}), 200
        if text.startswith("count:"):
            with self.lock:
                return json.dumps({"calls": self.calls.get(text.split(":")[1], 0)}), 200
        return json.dumps({"instance": self.instance_id, "upper": text.upper(), "length": len(data)}), 200
