# medmesh's default residency policy, in force when no --residency-policy
# file is given: patient data stays on its site.
#
# A call to a PHI service carries patient data (action "data_transfer");
# it is denied when caller and callee are at different sites. Calls to
# non-PHI services ("call") may cross sites, so those services can fail
# over to another site. Flows within one site are always allowed.
package medmesh.residency

deny contains msg if {
	input.action == "data_transfer"
	input.destination.site != input.source.site
	msg := sprintf("%s/%s is a PHI service at site %q; patient data does not leave its site (caller at site %q)", [
		input.destination.namespace,
		input.destination.service,
		input.destination.site,
		input.source.site,
	])
}
