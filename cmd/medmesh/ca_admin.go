package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"medmesh/certs"
	"medmesh/controlplane/adminauth"
)

// runCAAdminCert mints an operator's client certificate for the admin
// API: an X.509-SVID whose SPIFFE ID carries the role
// (spiffe://<td>/admin/<role>/<name>), signed by the root kept in a
// control plane's --state-dir or by an operator CA not made for one site.
func runCAAdminCert(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ca admin-cert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "who the certificate is for (one SPIFFE path segment, e.g. alice or grafana); required")
	roleFlag := fs.String("role", "read", "read (GET /debug/*, /ui) or operate (also POST /join-tokens, /ca/rotate, /ca/renew-svids)")
	ttl := fs.Duration("ttl", 8*time.Hour, "lifetime: the certificate is the grant, so keep it short (a shift)")
	out := fs.String("out", "", "directory for svid.pem, svid_key.pem (mode 0600) and bundle.pem; required")
	td := fs.String("trust-domain", "medmesh.local", "SPIFFE trust domain (the control plane's)")
	stateDir := fs.String("state-dir", "", "a control plane's --state-dir holding its self-signed root (ca/root.pem)")
	caCert := fs.String("ca-cert", "", "or: an operator CA certificate (the hospital root or an intermediate not made for one site, PEM)")
	caKey := fs.String("ca-key", "", "with --ca-cert: its private key (PEM, mode 0600)")
	caBundle := fs.String("ca-bundle", "", "with --ca-cert: trust anchors (PEM); required for an intermediate")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "medmesh ca admin-cert: "+format+"\n", a...)
		return 2
	}
	switch {
	case fs.NArg() > 0:
		return fail("unexpected arguments %q", fs.Args())
	case *name == "":
		return fail("--name is required")
	case *out == "":
		return fail("--out is required")
	case *ttl <= 0:
		return fail("--ttl must be positive")
	case (*stateDir == "") == (*caCert == ""):
		return fail("give either --state-dir (a control plane's self-signed root) or --ca-cert and --ca-key")
	}
	role, err := adminauth.ParseRole(*roleFlag)
	if err != nil {
		return fail("--role: %v", err)
	}
	if *stateDir != "" {
		// certs.New would create a new root in an empty directory: one no
		// control plane trusts.
		if _, err := os.Stat(filepath.Join(*stateDir, "ca", "root.pem")); err != nil {
			return fail("--state-dir %s: no CA root there (ca/root.pem): start the control plane with it first", *stateDir)
		}
	}
	ca, err := certs.New(certs.Options{TrustDomain: *td, StateDir: *stateDir, CertFile: *caCert, KeyFile: *caKey,
		BundleFile: *caBundle, SVIDTTL: *ttl})
	if err != nil {
		return fail("%v", err)
	}
	id, err := adminauth.AdminID(ca.TrustDomain(), role, *name)
	if err != nil {
		return fail("--name: %v", err)
	}
	svid, err := ca.NewSVID(id)
	if err != nil {
		fmt.Fprintf(stderr, "medmesh ca admin-cert: %v\n", err)
		return 1
	}
	if err := certs.WriteSVIDDir(*out, svid, ca.Bundle()); err != nil {
		fmt.Fprintf(stderr, "medmesh ca admin-cert: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "admin certificate %s (role %s), valid until %s, in %s\n"+
		"use it with:\n  medmesh status --admin https://HOST:PORT --cert-dir %s\n",
		id, role, svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339), *out, *out)
	return 0
}
