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
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Units of a row's value; they decide how it is printed.
const (
	unitSeconds = "s"
	unitMiB     = "MiB"
	unitPerSec  = "/s"
	unitCount   = ""
)

// row is one measured number, with its target when it has one.
type row struct {
	Scenario string  `json:"scenario"`
	Metric   string  `json:"metric"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit,omitempty"`
	Target   string  `json:"target,omitempty"`
	// Met is set when the row has a target.
	Met *bool `json:"met,omitempty"`
}

// machine describes where the benchmark ran.
type machine struct {
	CPUs      int        `json:"cpus"`
	MemoryMiB float64    `json:"memoryMiB"`
	GoVersion string     `json:"goVersion"`
	OS        string     `json:"os"`
	Arch      string     `json:"arch"`
	LoadStart [3]float64 `json:"loadAverageAtStart"`
	LoadEnd   [3]float64 `json:"loadAverageAtEnd"`
}

// report is the benchmark's result: the table, and the JSON file.
type report struct {
	Started  time.Time      `json:"started"`
	Seconds  float64        `json:"durationSeconds"`
	Machine  machine        `json:"machine"`
	Settings map[string]any `json:"settings"`
	Rows     []row          `json:"results"`
	Notes    []string       `json:"notes,omitempty"`
}

// add records a number without a target.
func (r *report) add(scenario, metric string, value float64, unit string) {
	r.Rows = append(r.Rows, row{Scenario: scenario, Metric: metric, Value: value, Unit: unit})
}

// check records a number and whether it meets target.
func (r *report) check(scenario, metric string, value float64, unit, target string, met bool) {
	r.Rows = append(r.Rows, row{Scenario: scenario, Metric: metric, Value: value, Unit: unit, Target: target, Met: &met})
}

func (r *report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// targets returns how many rows have a target and how many of those are met.
func (r *report) targets() (total, met int) {
	for _, row := range r.Rows {
		if row.Met != nil {
			total++
			if *row.Met {
				met++
			}
		}
	}
	return total, met
}

// printTable writes the rows as an aligned table, then the notes.
func (r *report) printTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tMETRIC\tVALUE\tTARGET\tMET")
	last := ""
	for _, row := range r.Rows {
		scenario := row.Scenario
		if scenario == last {
			scenario = ""
		}
		last = row.Scenario
		met := ""
		if row.Met != nil {
			met = "no"
			if *row.Met {
				met = "yes"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", scenario, row.Metric, formatValue(row.Value, row.Unit), row.Target, met)
	}
	_ = tw.Flush()
	total, met := r.targets()
	fmt.Fprintf(w, "\n%d of %d targets met; run took %s on %d CPUs (load average %.2f at start, %.2f at end).\n",
		met, total, (time.Duration(r.Seconds) * time.Second).String(), r.Machine.CPUs, r.Machine.LoadStart[0], r.Machine.LoadEnd[0])
	for _, n := range r.Notes {
		fmt.Fprintf(w, "Note: %s\n", n)
	}
}

func formatValue(v float64, unit string) string {
	switch unit {
	case unitSeconds:
		if v < 10 {
			return fmt.Sprintf("%.2f s", v)
		}
		return fmt.Sprintf("%.1f s", v)
	case unitMiB:
		return fmt.Sprintf("%.1f MiB", v)
	case unitPerSec:
		return fmt.Sprintf("%.1f /s", v)
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// writeJSON writes the report to path, creating its directory.
func (r *report) writeJSON(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// describeMachine reads CPUs, memory and load average of this machine.
func describeMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				m.MemoryMiB = math.Round(kb / 1024)
			}
		}
	}
	m.LoadStart = loadAverage()
	return m
}

// loadAverage returns the 1, 5 and 15 minute load averages, zero where
// they cannot be read.
func loadAverage() [3]float64 {
	var l [3]float64
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return l
	}
	f := strings.Fields(string(data))
	for i := 0; i < 3 && i < len(f); i++ {
		l[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return l
}

// percentile returns the q-quantile (0 < q <= 1) of ds by the nearest-rank
// method, zero for no values. It sorts ds.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

func mib(bytes float64) float64 { return bytes / (1 << 20) }
