"""User code the management-SDK test deploys (`processor_type: python`).

It prints one line when it starts (what DescribeServiceLog must give back) and answers
every JSON body with {"instance": <its id>, "echo": <the body>}, the answer the PAI
SDK's Predictor decodes.
"""

import json
import uuid


class MgmtEcho:
    def initialize(self):
        self.instance_id = uuid.uuid4().hex[:12]
        print(f"mgmt echo ready: instance {self.instance_id}", flush=True)

    def process(self, data):
        try:
            body = json.loads(data)
        except ValueError:
            return json.dumps({"message": "send JSON"}), 400
        return json.dumps({"instance": self.instance_id, "echo": body}), 200
