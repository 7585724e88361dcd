/*
Copyright 2026 The opsnow-token-operator Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Command tokenserver serves a local OpsNow-compatible token endpoint for the
// demo, end-to-end tests and benchmarks.
//
//	go run ./hack/tokenserver --listen 127.0.0.1:8089 --lifetime 60s
//
// It prints one line to stdout once it accepts connections:
//
//	tokenserver: listening on http://127.0.0.1:8089 (token lifetime 60s)
//
// and one line per token request to stderr, never showing an API key or a
// token. Counters are at GET /stats; faults are injected with POST /fault and
// cleared with DELETE /fault (see package internal/tokenserver). Because it
// hands out tokens to anyone who asks, it listens only on loopback addresses
// unless --allow-non-loopback is given.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

const shutdownTimeout = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type config struct {
	listen           string
	lifetime         time.Duration
	latency          time.Duration
	apiKeys          []string
	allowNonLoopback bool
}

// errHelp asks run to exit successfully after printing the usage.
var errHelp = errors.New("help requested")

func parseFlags(args []string, stdout io.Writer) (config, error) {
	var cfg config
	var keys string
	fs := flag.NewFlagSet("tokenserver", flag.ContinueOnError)
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:8089", "`address` to listen on; port 0 picks a free port")
	fs.DurationVar(&cfg.lifetime, "lifetime", tokenserver.DefaultLifetime, "token lifetime reported in expiresIn (whole seconds, at least 1s)")
	fs.DurationVar(&cfg.latency, "latency", 0, "artificial delay added to every token request")
	fs.StringVar(&keys, "api-keys", "", "comma-separated `keys` to accept; empty accepts every key")
	fs.BoolVar(&cfg.allowNonLoopback, "allow-non-loopback", false, "allow listening on a non-loopback address (the server hands out tokens to anyone)")
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "Usage: tokenserver [flags]\n\n")
		fmt.Fprintf(out, "Serves a local OpsNow-compatible token endpoint (POST %s)\n", tokenserver.TokenPath)
		fmt.Fprintf(out, "plus GET /stats and POST/DELETE /fault for tests and demos.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	// The flag package's own error output is a message plus the whole usage;
	// run prints a single line instead.
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return cfg, errHelp
		}
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.lifetime < time.Second {
		return cfg, fmt.Errorf("--lifetime must be at least 1s, got %s", cfg.lifetime)
	}
	if cfg.latency < 0 {
		return cfg, fmt.Errorf("--latency must not be negative, got %s", cfg.latency)
	}
	for _, k := range strings.Split(keys, ",") {
		if k = strings.TrimSpace(k); k != "" {
			cfg.apiKeys = append(cfg.apiKeys, k)
		}
	}
	if keys != "" && len(cfg.apiKeys) == 0 {
		return cfg, errors.New("--api-keys lists no key")
	}
	if !cfg.allowNonLoopback {
		// Literal addresses are refused before binding; host names are
		// checked on the address actually bound, in run.
		host, _, err := net.SplitHostPort(cfg.listen)
		if err != nil {
			return cfg, fmt.Errorf("--listen %q: %v", cfg.listen, err)
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && !ip.IsLoopback()) {
			return cfg, fmt.Errorf("--listen %q is not a loopback address; pass --allow-non-loopback to serve tokens to other hosts", cfg.listen)
		}
	}
	return cfg, nil
}

// run serves until ctx is cancelled and returns the process exit code:
// 0 after a clean shutdown, 2 for bad flags, 1 for other failures.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "tokenserver: %v (see --help)\n", err)
		return 2
	}

	logger := log.New(stderr, "tokenserver: ", 0) // safe for concurrent use
	srv := tokenserver.New(tokenserver.Options{
		Lifetime:  cfg.lifetime,
		Latency:   cfg.latency,
		APIKeys:   cfg.apiKeys,
		OnRequest: func(ev tokenserver.Event) { logger.Print(describe(ev)) },
	})

	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		fmt.Fprintf(stderr, "tokenserver: %v\n", err)
		return 1
	}
	addr, _ := ln.Addr().(*net.TCPAddr)
	if !cfg.allowNonLoopback && (addr == nil || !addr.IP.IsLoopback()) {
		_ = ln.Close()
		fmt.Fprintf(stderr, "tokenserver: --listen %q bound %s, which is not a loopback address; pass --allow-non-loopback to serve tokens to other hosts (see --help)\n", cfg.listen, ln.Addr())
		return 2
	}

	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(stderr, "tokenserver: http: ", 0),
		// Requests waiting out --latency or a fault delay end at shutdown
		// instead of holding it up.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	fmt.Fprintf(stdout, "tokenserver: listening on http://%s (token lifetime %s)\n", ln.Addr(), seconds(cfg.lifetime))

	select {
	case err := <-served:
		fmt.Fprintf(stderr, "tokenserver: %v\n", err)
		return 1
	case <-ctx.Done():
	}
	logger.Print("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		fmt.Fprintf(stderr, "tokenserver: shutdown: %v\n", err)
		return 1
	}
	return 0
}

// describe renders a token request outcome as one log line. Events carry no
// key or token, so nothing secret can reach the log.
func describe(ev tokenserver.Event) string {
	switch {
	case ev.Token > 0:
		return fmt.Sprintf("issued token #%d (lifetime %s)", ev.Token, seconds(ev.Lifetime))
	default:
		return fmt.Sprintf("request #%d failed: %d (%s)", ev.Request, ev.Status, ev.Reason)
	}
}

// seconds prints whole-second durations as "60s" rather than "1m0s", the
// unit in which OpsNow reports lifetimes.
func seconds(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}
