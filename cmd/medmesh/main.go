// Command medmesh is the medmesh service mesh: control plane, sidecar
// extension, bootstrap generator and status client in one binary.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"controlplane", "run the xDS control plane (registry watch, translation, ADS server, admin HTTP)", runControlPlane},
		{"sidecar", "run the Envoy ext_proc extension (PHI tagging, priority queueing)", runSidecar},
		{"bootstrap", "print an Envoy bootstrap (YAML) or, with --proxyless, a gRPC xDS bootstrap (JSON)", runBootstrap},
		{"ca", "certificate authority tools: 'ca intermediate' makes an edge site's intermediate CA from the hospital root", runCA},
		{"status", "print a table of the proxies connected to a control plane", runStatus},
		{"version", "print the version", func([]string, io.Writer, io.Writer) int { fmt.Println("medmesh", version); return 0 }},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "medmesh: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: medmesh <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'medmesh <command> -h' for a command's flags.")
}

func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
