#!/usr/bin/env python3
"""Smoke test with a generic gRPC client (Python grpcio + reflection, nothing generated).

Lists the services through server reflection (v1alpha, the protocol grpcio-reflection speaks),
checks health is SERVING, and asks the given partnership for one decision of each kind it
lists, printing the outcome and the first cited reason. Usage:

    pip install grpcio grpcio-reflection grpcio-health-checking protobuf
    python3 scripts/smoke.py [host:port] [partnership]
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

EXAMPLES = {
    "attendance": {"role": "ROLE_PARENT", "session": "SESSION_WHOLE", "wishes_to_give_views": True, "intends_to_attend": False},
    "exclusion": {"role": "ROLE_PARENT", "grounds": ["EXCLUSION_GROUND_BAIL_CONDITIONS_NO_CONTACT"]},
    "child_invitation": {"age": 14, "sufficient_understanding": True, "wishes_to_attend": "CHILD_WISH_YES", "sensitive_information": True},
    "plan_type": {"conference_type": "CONFERENCE_TYPE_INITIAL", "significant_harm": "SIGNIFICANT_HARM_LIKELY", "categories": ["ABUSE_CATEGORY_NEGLECT"],
                  "needs_support": True, "early_help_appropriate": False, "conference_date": "2025-04-16"},
    "complaint_eligibility": {"complainant": "COMPLAINANT_PARENT", "grounds": [{"category": "GROUND_CATEGORY_PLAN_DECISION", "description": "The plan was made without hearing me."}],
                              "stage1_completed": True, "states_criteria_aspects": True, "still_dissatisfied": "The plan stands.", "solution_sought": "A new conference."},
    "timescales": {"strategy_discussion_date": "2025-03-31", "as_of": "2025-04-10"},
}
RPC = {"attendance": "CheckAttendance", "exclusion": "CheckExclusion", "child_invitation": "CheckChildInvitation",
       "plan_type": "DeterminePlanType", "complaint_eligibility": "CheckComplaintEligibility", "timescales": "ComputeTimescales"}


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
    partnership = sys.argv[2] if len(sys.argv) > 2 else "york"
    channel = grpc.insecure_channel(target)
    db = ProtoReflectionDescriptorDatabase(channel)
    services = db.get_services()
    print("services:", ", ".join(services))
    for needed in ("cpc.v1.DecisionService", "cpc.v1.RulesService", "grpc.health.v1.Health"):
        assert needed in services, needed
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "cpc.v1.DecisionService", "cpc.v1.RulesService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
        print(f"health {name or '(overall)'}: {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")
        assert status == health_pb2.HealthCheckResponse.SERVING
    pool = descriptor_pool.DescriptorPool(db)
    service = pool.FindServiceByName("cpc.v1.DecisionService")
    rules = pool.FindServiceByName("cpc.v1.RulesService")

    def call(svc, method_name, body):
        method = svc.FindMethodByName(method_name)
        req_cls = message_factory.GetMessageClass(method.input_type)
        resp_cls = message_factory.GetMessageClass(method.output_type)
        stub = channel.unary_unary(f"/{svc.full_name}/{method_name}", request_serializer=req_cls.SerializeToString,
                                   response_deserializer=resp_cls.FromString)
        return json_format.MessageToDict(stub(json_format.ParseDict(body, req_cls())), preserving_proto_field_name=True)

    listing = call(rules, "ListPartnerships", {})
    kinds = next(p for p in listing["partnerships"] if p["id"] == partnership)
    kinds = [k["name"] if isinstance(k, dict) else k for k in kinds["kinds"]]
    for kind in kinds:
        if kind not in EXAMPLES:
            continue
        d = call(service, RPC[kind], dict(EXAMPLES[kind], partnership=partnership))
        r = d["reasons"][0]
        print(f"{partnership} {kind}: {d['outcome']} — {r['text']} ({r['citation']['document']}, \"{r['citation']['section']}\")")
    print("smoke test passed")


if __name__ == "__main__":
    main()
