# Central Bedfordshire's Stage 2 complaint-eligibility policy, written in Rego for comparison.
#
# This is the same policy as rules/central-bedfordshire/complaint_eligibility.rhai together with
# the shared helpers in rules/shared/complaints.rhai, written as an OPA user would write it, so
# that `cargo bench --bench decisions` can measure the Rhai engine against regorus on the same
# facts in the same run. It is a benchmark fixture, not a rule the service runs.
#
#   - four matters only go to the Board's Stage 2 panel; every other ground goes to the agency's
#     own complaints procedure;
#   - precedence: not_eligible > premature > incomplete > eligible / partly_eligible;
#   - the same reasons (rule ids, section, text, assumption flag), actions, routes and panel
#     recommendations as the script.
#
# The benchmark asserts, before measuring, that this policy and the script agree on every
# benchmarked case: outcome, reasons (rule id, section, assumption flag), actions (code, due
# date, who), routes and the number of panel recommendations; and it warns if the wording has
# drifted from the script's (policy leads edit the script's text; the copy here is only kept
# for equal-sized output).

package cpc.complaint

import rego.v1

section := "What if I do not agree with the conference's decision?"

panel_matters := {"plan_decision", "category_of_abuse", "conference_process", "procedures_not_followed"}

panel_recommendations := [
	"Recommend that the conference meets again sooner, or with a different chair, or both, to look again at whether the child should have, or keep, a Child Protection Plan and at the category of significant harm that decision rests on.",
	"Point out what a particular agency could learn from the case.",
]

reason(id, text) := {"rule_id": id, "section": section, "text": text, "assumption": false}

assumption(id, text) := {"rule_id": id, "section": section, "text": text, "assumption": true}

act(code, description, responsible) := {"code": code, "description": description, "due_date": null, "responsible": responsible}

# --- shared helpers (rules/shared/complaints.rhai) ---------------------------------------------

route_of(category) := "stage2_panel" if category in panel_matters

else := "agency_complaints_procedure"

routes := [r |
	some i, g in input.grounds
	r := {"index": i, "category": g.category, "route": route_of(g.category)}
]

panel_count := count([r | some r in routes; r.route == "stage2_panel"])

agency_count := count(routes) - panel_count

blank(key) if object.get(input, key, null) == null

blank(key) if {
	is_string(input[key])
	trim_space(input[key]) == ""
}

is_missing("criteria_aspects") if not input.states_criteria_aspects

is_missing("still_dissatisfied") if blank("still_dissatisfied")

is_missing("solution_sought") if blank("solution_sought")

missing := [m | some m in ["criteria_aspects", "still_dissatisfied", "solution_sought"]; is_missing(m)]

missing_words := {
	"criteria_aspects": "which aspects of the complaint meet the Stage 2 criteria",
	"still_dissatisfied": "what the complainant is still dissatisfied about",
	"solution_sought": "what solution the complainant is looking for",
}

describe_missing := concat("; ", [missing_words[m] | some m in missing])

outcome := "not_eligible" if panel_count == 0
else := "premature" if not input.stage1_completed
else := "incomplete" if count(missing) > 0
else := "partly_eligible" if agency_count > 0
else := "eligible"

# --- Central Bedfordshire ----------------------------------------------------------------------

categories := {g.category | some g in input.grounds}

complainant_reasons := [assumption(
	"central-bedfordshire.complaint.complainant",
	"The guide speaks to parents and carers and does not say who else may complain. To keep the process fair we assume this complainant may use the same procedure. Central Bedfordshire should confirm this.",
)] if {
	not input.complainant in {"parent", "carer"}
} else := []

criteria_reasons := [reason(
	"central-bedfordshire.complaint.stage2-criteria",
	"The Board's complaints panel can look at only four matters at Stage 2: whether the child should start, keep or not have a Child Protection Plan; the category or categories of abuse the chair decided; how the conference was run; and whether the conference procedures and other agreed inter-agency protocols were followed.",
)]

agency_reasons := [reason(
	"central-bedfordshire.complaint.agency-matters",
	"Complaints about how one agency worked or what it decided, or about how a professional behaved (for example a social worker's report the parents did not get in good time, or a chair who was rude at the meeting before the conference), are sent to that agency's own internal complaints procedure, not to the panel.",
)] if {
	count({"agency_practice", "professional_conduct"} & categories) > 0
} else := []

other_reasons := [
	reason(
		"central-bedfordshire.complaint.other-not-panel",
		"A matter outside the four listed cannot be considered by the panel at Stage 2.",
	),
	assumption(
		"central-bedfordshire.complaint.other-route",
		"The guide does not say where such a matter goes. We assume the complainant is directed to the complaints procedure of the agency concerned, as the guide does for agency practice and professional conduct. Central Bedfordshire should confirm this.",
	),
] if "other" in categories
else := []

outcome_reasons := [reason(
	"central-bedfordshire.complaint.no-panel-matter",
	"None of the grounds raised is one of the four matters the panel can consider, so the complaint cannot be heard at Stage 2.",
)] if outcome == "not_eligible"
else := [reason(
	"central-bedfordshire.complaint.stage1-first",
	"Stage 2 is for someone still unhappy with the outcome of their complaint about the conference process; that first stage has not finished yet, so it must be completed before the Board can consider the complaint.",
)] if outcome == "premature"
else := [reason(
	"central-bedfordshire.complaint.statements-required",
	sprintf("To be heard at Stage 2 the complaint must say which parts of it meet the criteria, what the complainant is still unhappy about and what solution they want. Missing: %s.", [describe_missing]),
)] if outcome == "incomplete"
else := [
	reason(
		"central-bedfordshire.complaint.statements-given",
		"The complaint says which parts of it meet the criteria, what the complainant is still unhappy about and what solution they want.",
	),
	reason(
		"central-bedfordshire.complaint.panel-recommendations",
		"The panel can only recommend that the conference meets again sooner, or with a different chair, or both, to rethink the plan decision and the category of harm, or point out what a particular agency could learn.",
	),
]

stands_reasons := [reason(
	"central-bedfordshire.complaint.decision-stands",
	"While the complaint is being considered, the conference's decision still applies.",
)]

# Written for regorus's RVM as well as its interpreter: regorus 0.14.1's RVM returns an empty
# list for the flattening comprehension `[r | some part in [p1, p2]; some r in part]` and leaves
# a rule undefined instead of taking its `else` when a body with `some x in ...` finds nothing;
# hence array.concat here and a set intersection in agency_reasons. The interpreter gets both
# forms right.
reasons := array.concat(
	array.concat(array.concat(complainant_reasons, criteria_reasons), array.concat(agency_reasons, other_reasons)),
	array.concat(outcome_reasons, stands_reasons),
)

outcome_actions := [] if outcome == "not_eligible"
else := [act("complete_stage1", "Finish the first stage of the complaint about the conference process before asking for Stage 2.", "complainant")] if outcome == "premature"
else := [act("supply_missing_statements", sprintf("Ask the complainant to say: %s.", [describe_missing]), "complainant")] if outcome == "incomplete"
else := [act("convene_stage2_panel", "Refer the complaint to the Safeguarding Children Board's Stage 2 complaints panel.", "safeguarding_partnership")]

agency_actions := [act("refer_to_agency_complaints", "Direct the complainant to the agency's own internal complaints procedure for the grounds the panel cannot consider.", "safeguarding_partnership")] if agency_count > 0
else := []

actions := array.concat(outcome_actions, agency_actions)

summaries := {
	"eligible": "Your complaint can be heard by the Safeguarding Children Board's panel at Stage 2; the conference decision stands meanwhile.",
	"partly_eligible": "Part of your complaint can be heard by the Board's panel at Stage 2 and the rest goes to the agency's own complaints procedure; the conference decision stands meanwhile.",
	"premature": "Your complaint about the conference process must finish its first stage before Stage 2; the conference decision stands meanwhile.",
	"incomplete": "Before Stage 2 you need to tell us which parts of your complaint meet the criteria, what you are still unhappy about and what you want to happen; the conference decision stands meanwhile.",
	"not_eligible": "Your complaint is not one the Board's panel can hear at Stage 2; the conference decision stands meanwhile.",
}

decision := {
	"outcome": outcome,
	"summary": summaries[outcome],
	"reasons": reasons,
	"actions": actions,
	"details": {"grounds": routes, "panel_recommendations": panel_recommendations},
}
