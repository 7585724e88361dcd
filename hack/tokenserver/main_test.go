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

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opsnow-token-operator/opsnow-token-operator/internal/tokenserver"
)

func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--nope"}, "flag provided but not defined"},
		{"bad duration", []string{"--lifetime", "soon"}, "invalid value"},
		{"short lifetime", []string{"--lifetime", "500ms"}, "--lifetime must be at least 1s"},
		{"negative latency", []string{"--latency", "-1s"}, "--latency must not be negative"},
		{"empty key list", []string{"--api-keys", " , "}, "--api-keys lists no key"},
		{"positional argument", []string{"extra"}, `unexpected argument "extra"`},
		{"all interfaces", []string{"--listen", ":0"}, "not a loopback address"},
		{"non-loopback ip", []string{"--listen", "0.0.0.0:0"}, "not a loopback address"},
		{"no port", []string{"--listen", "127.0.0.1"}, "missing port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr)
			if code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			msg := stderr.String()
			if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "tokenserver: ") || !strings.Contains(msg, tc.want) {
				t.Errorf("stderr = %q, want one line containing %q", msg, tc.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout = %q, want nothing", stdout.String())
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	for _, want := range []string{"-listen", "127.0.0.1:8089", "-lifetime", "1h0m0s", "-latency", "-api-keys", "-allow-non-loopback"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, stdout.String())
		}
	}
}

// syncBuffer lets the test read what the server goroutines write.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestServeAndShutdown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdoutR, stdoutW := io.Pipe()
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--lifetime", "60s", "--api-keys", "good"}, stdoutW, &stderr)
		stdoutW.Close()
	}()

	line, err := bufio.NewReader(stdoutR).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the ready line: %v (stderr %q)", err, stderr.String())
	}
	m := regexp.MustCompile(`^tokenserver: listening on (http://127\.0\.0\.1:[1-9][0-9]*) \(token lifetime 60s\)\n$`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("ready line = %q", line)
	}
	go io.Copy(io.Discard, stdoutR) //nolint:errcheck // drain until run returns

	var token string
	for _, key := range []string{"good", "bad"} {
		resp, err := http.Post(m[1]+tokenserver.TokenPath, "application/json", strings.NewReader(`{"apiKey":"`+key+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Data struct{ AccessToken string } `json:"data"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if key == "good" {
			token = body.Data.AccessToken
		}
	}
	if token == "" {
		t.Fatal("no token issued for the accepted key")
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code %d after shutdown, want 0 (stderr %q)", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not shut down")
	}

	log := stderr.String()
	want := "tokenserver: issued token #1 (lifetime 60s)\n" +
		"tokenserver: request #2 failed: 401 (invalid api key)\n" +
		"tokenserver: shutting down\n"
	if log != want {
		t.Errorf("stderr = %q, want %q", log, want)
	}
	if strings.Contains(log, token) || strings.Contains(log, "good") || strings.Contains(log, "bad") {
		t.Errorf("stderr reveals a key or token: %q", log)
	}
}
