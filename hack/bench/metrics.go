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
	"fmt"
	"os"
	"strconv"
	"strings"
)

// sample is one line of the Prometheus text format: a metric name, its
// labels and its value.
type sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// parseMetrics reads the Prometheus text exposition format (version 0.0.4),
// as served by kube-apiserver and controller-runtime. Comments and lines it
// cannot read are skipped: the benchmark needs a few counters, not a
// validating parser.
func parseMetrics(data []byte) []sample {
	var out []sample
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if s, ok := parseSample(line); ok {
			out = append(out, s)
		}
	}
	return out
}

func parseSample(line string) (sample, bool) {
	s := sample{Labels: map[string]string{}}
	end := strings.IndexAny(line, "{ ")
	if end <= 0 {
		return s, false
	}
	s.Name, line = line[:end], line[end:]
	if line[0] == '{' {
		rest, ok := parseLabels(line[1:], s.Labels)
		if !ok {
			return s, false
		}
		line = rest
	}
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return s, false
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, false
	}
	s.Value = v
	return s, true
}

// parseLabels reads `name="value",...}` into labels and returns what follows
// the closing brace. Values may hold escaped quotes, backslashes and newlines.
func parseLabels(in string, labels map[string]string) (string, bool) {
	for {
		in = strings.TrimLeft(in, " ,")
		if in == "" {
			return "", false
		}
		if in[0] == '}' {
			return in[1:], true
		}
		eq := strings.IndexByte(in, '=')
		if eq <= 0 || len(in) < eq+2 || in[eq+1] != '"' {
			return "", false
		}
		name := strings.TrimSpace(in[:eq])
		in = in[eq+2:]
		var value strings.Builder
		closed := false
		for i := 0; i < len(in); i++ {
			c := in[i]
			if c == '\\' && i+1 < len(in) {
				i++
				switch in[i] {
				case 'n':
					value.WriteByte('\n')
				default:
					value.WriteByte(in[i])
				}
				continue
			}
			if c == '"' {
				labels[name] = value.String()
				in = in[i+1:]
				closed = true
				break
			}
			value.WriteByte(c)
		}
		if !closed {
			return "", false
		}
	}
}

// sum adds the values of the samples named name whose labels pass match
// (nil matches all).
func sum(samples []sample, name string, match func(map[string]string) bool) float64 {
	total := 0.0
	for _, s := range samples {
		if s.Name == name && (match == nil || match(s.Labels)) {
			total += s.Value
		}
	}
	return total
}

// writeVerbs are the API-server request verbs that write.
var writeVerbs = map[string]bool{"POST": true, "PUT": true, "PATCH": true, "APPLY": true}

// writeResources are the resources whose writes the benchmark counts, as
// keys of apiWrites: resource, or resource/subresource.
var writeResources = []string{"secrets", "opsnowtokens", "opsnowtokens/status", "events"}

// secretReads is the key of apiWrites that counts reads of single Secrets
// (GET): the manager caches no Secret data, and this shows what that costs.
const secretReads = "secrets GET"

// apiWrites counts write requests by resource (and subresource) in
// kube-apiserver's apiserver_request_total, whatever their outcome, and
// reads of single Secrets under secretReads.
func apiWrites(samples []sample) map[string]float64 {
	out := make(map[string]float64, len(writeResources)+1)
	for _, s := range samples {
		if s.Name != "apiserver_request_total" {
			continue
		}
		if s.Labels["verb"] == "GET" && s.Labels["resource"] == "secrets" && s.Labels["subresource"] == "" {
			out[secretReads] += s.Value
			continue
		}
		if !writeVerbs[s.Labels["verb"]] {
			continue
		}
		key := s.Labels["resource"]
		if sub := s.Labels["subresource"]; sub != "" {
			key += "/" + sub
		}
		out[key] += s.Value
	}
	return out
}

// memory is a process's resident memory, in bytes, from /proc/PID/status.
type memory struct {
	// RSS is the resident set size (VmRSS): anonymous memory, plus the
	// pages of the binary and other files it has mapped.
	RSS float64
	// Anon is the anonymous part of RSS (RssAnon): heap, stacks and
	// runtime, what a memory limit really has to hold.
	Anon float64
	// Peak is the largest RSS over the process's life (VmHWM).
	Peak float64
}

func procStatus(pid int) (memory, error) {
	var m memory
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, fmt.Errorf("read memory of process %d: %w", pid, err)
	}
	fields := map[string]*float64{"VmRSS": &m.RSS, "RssAnon": &m.Anon, "VmHWM": &m.Peak}
	for _, line := range strings.Split(string(data), "\n") {
		name, value, ok := strings.Cut(line, ":")
		dst := fields[name]
		if !ok || dst == nil {
			continue
		}
		f := strings.Fields(value)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
			*dst = kb * 1024
		}
	}
	if m.RSS == 0 {
		return m, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return m, nil
}

// procCPU returns the CPU time (user + system) process pid used so far, in
// seconds, from /proc/PID/stat.
func procCPU(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read CPU time of process %d: %w", pid, err)
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(fields) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseFloat(fields[11], 64)
	stime, err2 := strconv.ParseFloat(fields[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	// Clock ticks are 100 per second on every Linux platform Go supports.
	return (utime + stime) / 100, nil
}
