package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"medmesh/certs"
)

// runCA dispatches `medmesh ca <subcommand>`.
func runCA(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, "usage: medmesh ca intermediate --site NAME --root-cert FILE --root-key FILE --out-dir DIR [flags]\n"+
			"       medmesh ca admin-cert --name NAME --role read|operate --out DIR (--state-dir DIR | --ca-cert FILE --ca-key FILE) [flags]\n\n"+
			"  intermediate  make an edge site's intermediate CA from the hospital root (run once per site, at the hub)\n"+
			"  admin-cert    make a person's or tool's client certificate for the admin API, with its role")
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "intermediate":
		return runCAIntermediate(args[1:], stdout, stderr)
	case "admin-cert":
		return runCAAdminCert(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "medmesh ca: unknown subcommand %q; want intermediate or admin-cert\n", args[0])
	return 2
}

func runCAIntermediate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ca intermediate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o certs.IntermediateOptions
	fs.StringVar(&o.Site, "site", "", "the edge site the intermediate is for (a lower-case DNS label); required")
	fs.StringVar(&o.TrustDomain, "trust-domain", "medmesh.local", "SPIFFE trust domain (the root's, and every site's)")
	fs.StringVar(&o.RootCertFile, "root-cert", "", "the hospital root (PEM), or an issuing CA followed by its chain up to the root; required")
	fs.StringVar(&o.RootKeyFile, "root-key", "", "private key of the first certificate in --root-cert (PEM, mode 0600); required")
	fs.DurationVar(&o.TTL, "ttl", 30*24*time.Hour, "lifetime of the intermediate: how long the site can issue SVIDs without the hub")
	fs.StringVar(&o.OutDir, "out-dir", "", "directory for intermediate.pem, intermediate-key.pem and bundle.pem; required")
	fs.BoolVar(&o.Force, "force", false, "replace the files if --out-dir already holds them")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "medmesh ca intermediate: unexpected arguments %q\n", fs.Args())
		return 2
	}
	inter, err := certs.NewIntermediate(o)
	var input *certs.InputError
	switch {
	case errors.As(err, &input):
		fmt.Fprintf(stderr, "medmesh ca intermediate: --%s: %s\n", input.Input, input.Reason())
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "medmesh ca intermediate: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "intermediate CA for site %s (trust domain %s), valid until %s:\n  %s\n  %s (keep secret, mode 0600)\n  %s\n"+
		"run the site's control plane with:\n  medmesh controlplane --site %s --trust-domain %s --ca-cert %s --ca-key %s --ca-bundle %s\n",
		o.Site, o.TrustDomain, inter.Cert.NotAfter.UTC().Format(time.RFC3339), inter.CertFile, inter.KeyFile, inter.BundleFile,
		o.Site, o.TrustDomain, inter.CertFile, inter.KeyFile, inter.BundleFile)
	return 0
}
