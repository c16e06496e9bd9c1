package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/deltasync/deltasync/replicate"
)

// replMetrics are a replication's Prometheus metrics, named after the
// Prometheus conventions (base units, _total counters, one disk label).
type replMetrics struct {
	reg      *prometheus.Registry
	cycles   *prometheus.CounterVec // by result
	bytes    *prometheus.CounterVec // by kind
	duration prometheus.Histogram
	scrubs   prometheus.Counter
	kept     prometheus.Counter

	mu      sync.Mutex
	status  func() replicate.Status // nil until the replication is open
	lastErr string
	lastOK  bool
}

func newReplMetrics(name string) *replMetrics {
	m := &replMetrics{reg: prometheus.NewRegistry()}
	l := prometheus.Labels{"disk": name}
	m.cycles = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deltasync_replication_cycles_total",
		Help: "Replication cycles ended, by result (success, failure).", ConstLabels: l}, []string{"result"})
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deltasync_replication_bytes_total",
		Help: "Bytes of the source compared, and of the target written and zeroed, by cycles.", ConstLabels: l}, []string{"kind"})
	m.duration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "deltasync_replication_cycle_duration_seconds",
		Help: "Duration of successful cycles, from freezing the source to retention.", ConstLabels: l,
		Buckets: prometheus.ExponentialBuckets(0.5, 2, 14)})
	m.scrubs = prometheus.NewCounter(prometheus.CounterOpts{Name: "deltasync_replication_scrubs_total",
		Help: "Successful cycles that compared the whole disk.", ConstLabels: l})
	m.kept = prometheus.NewCounter(prometheus.CounterOpts{Name: "deltasync_replication_points_kept_current_total",
		Help: "Successful cycles that changed nothing and kept the newest point instead of cutting one.", ConstLabels: l})
	for _, r := range []string{"success", "failure"} {
		m.cycles.WithLabelValues(r)
	}
	for _, k := range []string{"compared", "written", "zeroed"} {
		m.bytes.WithLabelValues(k)
	}
	status := func() replicate.Status {
		m.mu.Lock()
		f := m.status
		m.mu.Unlock()
		if f == nil {
			return replicate.Status{}
		}
		return f()
	}
	gauge := func(name, help string, f func(replicate.Status) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: l}, func() float64 { return f(status()) })
	}
	m.reg.MustRegister(m.cycles, m.bytes, m.duration, m.scrubs, m.kept,
		gauge("deltasync_replication_lag_seconds", "Recovery point objective met: seconds since the source view of the last successful cycle was frozen (0 before the first).",
			func(s replicate.Status) float64 { return s.Lag.Seconds() }),
		gauge("deltasync_replication_points", "Recovery points this replicator made and keeps.",
			func(s replicate.Status) float64 { return float64(len(s.Points)) }),
		gauge("deltasync_replication_last_success_timestamp_seconds", "Unix time the last successful cycle ended (0 before the first).",
			func(s replicate.Status) float64 {
				if s.LastSuccess.IsZero() {
					return 0
				}
				return float64(s.LastSuccess.UnixNano()) / 1e9
			}),
		gauge("deltasync_replication_cycle_running", "1 while a cycle runs.",
			func(s replicate.Status) float64 {
				if s.Running {
					return 1
				}
				return 0
			}),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// observe counts a cycle's figures (a group cycle's are its members'
// summed, Full when any compared everything, PointKept never).
func (m *replMetrics) observe(rep replicate.CycleReport, err error) {
	m.mu.Lock()
	m.lastOK = err == nil
	m.lastErr = ""
	if err != nil {
		m.lastErr = scrub(err.Error())
	}
	m.mu.Unlock()
	st := rep.Stats
	m.bytes.WithLabelValues("compared").Add(float64(st.Compared))
	m.bytes.WithLabelValues("written").Add(float64(st.Written))
	m.bytes.WithLabelValues("zeroed").Add(float64(st.Zeroed))
	if err != nil {
		m.cycles.WithLabelValues("failure").Inc()
		return
	}
	m.cycles.WithLabelValues("success").Inc()
	m.duration.Observe(rep.Elapsed.Seconds())
	if rep.Full {
		m.scrubs.Inc()
	}
	if rep.PointKept {
		m.kept.Inc()
	}
}

// ready says whether the replication keeps its objective: the last cycle
// succeeded and the lag is under two intervals plus the last cycle's
// duration. Before the first cycle ends it is not ready.
func (x *replication) ready() (bool, string) {
	m := x.metrics
	m.mu.Lock()
	ok, msg := m.lastOK, m.lastErr
	m.mu.Unlock()
	s := x.status()
	switch {
	case s.Cycles == 0 && s.Failed == 0:
		return false, "no cycle has ended yet"
	case !ok:
		return false, "the last cycle failed: " + msg
	}
	if lim := 2*x.interval + s.LastCycle.Elapsed; s.Lag > lim {
		return false, fmt.Sprintf("lag %v is over %v", s.Lag.Round(time.Second), lim.Round(time.Second))
	}
	return true, fmt.Sprintf("lag %v", s.Lag.Round(time.Millisecond))
}

// serveMetrics serves /metrics, /healthz (the process answers) and
// /readyz (ready) at addr until stop is called.
func (x *replication) serveMetrics(addr string) (stop func(), err error) {
	x.metrics.mu.Lock()
	x.metrics.status = x.status
	x.metrics.mu.Unlock()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-metrics %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(x.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ok, why := x.ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, why)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			x.log.Error("metrics server", "error", err.Error())
		}
	}()
	x.log.Info("serving metrics", "address", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
