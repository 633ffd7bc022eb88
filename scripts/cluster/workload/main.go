// The one program of the local cluster's own images (scripts/cluster.sh), static, so that each
// image is this file alone on an empty root:
//
//	pause                                     the sandbox ("pause") image: holds the pod's
//	                                          namespaces, reaps orphans, exits on SIGTERM/SIGINT
//	workload serve --listen ADDR --reply TEXT HTTP server: every request gets TEXT and a newline;
//	                                          /source answers the client's address as seen here
//	workload get URL                          one request with a new connection: the body on
//	                                          stdout, or the failure's kind on stderr and exit 1
//	workload loop --url URL --status ADDR     a new connection to URL every --interval, counted;
//	                                          the counts as JSON on http://ADDR/
//
// The kinds of failure are the words the tests compare: refused, timeout, reset, unreachable.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if filepath.Base(os.Args[0]) == "pause" {
		pause()
		return
	}
	if len(os.Args) < 2 {
		usage()
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "serve":
		serve(args)
	case "get":
		get(args)
	case "loop":
		loop(args)
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: workload serve --listen ADDR --reply TEXT | get URL | loop --url URL --status ADDR [--interval D] [--timeout D]")
	os.Exit(2)
}

// pause is what a pod sandbox runs: PID 1 of the pod when it shares a PID namespace, so it reaps
// the orphans reparented to it, and it ends cleanly when the runtime stops the sandbox.
func pause() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

func serve(args []string) {
	flags := flag.NewFlagSet("serve", flag.ExitOnError)
	var listens multiFlag
	flags.Var(&listens, "listen", "address to listen on (repeatable), e.g. :8080")
	reply := flags.String("reply", "", "what every request gets")
	_ = flags.Parse(args)
	if len(listens) == 0 || *reply == "" {
		usage()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/source", func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintln(w, host)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, *reply)
	})
	errs := make(chan error, len(listens))
	for _, address := range listens {
		server := &http.Server{Addr: address, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { errs <- server.ListenAndServe() }()
	}
	stopOnSignal()
	fmt.Fprintln(os.Stderr, <-errs)
	os.Exit(1)
}

func get(args []string) {
	flags := flag.NewFlagSet("get", flag.ExitOnError)
	timeout := flags.Duration("timeout", 2*time.Second, "limit of the whole request")
	_ = flags.Parse(args)
	if flags.NArg() != 1 {
		usage()
	}
	body, err := request(flags.Arg(0), *timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, failureKind(err))
		os.Exit(1)
	}
	fmt.Print(body)
}

// counts is what loop serves on its status address.
type counts struct {
	OK     int64            `json:"ok"`
	Failed int64            `json:"failed"`
	Errors map[string]int64 `json:"errors"`
	Last   string           `json:"last"`
}

func loop(args []string) {
	flags := flag.NewFlagSet("loop", flag.ExitOnError)
	url := flags.String("url", "", "what to request, with a new connection each time")
	status := flags.String("status", "", "where the counts are served")
	interval := flags.Duration("interval", 100*time.Millisecond, "pause between two requests")
	timeout := flags.Duration("timeout", 2*time.Second, "limit of one request")
	_ = flags.Parse(args)
	if *url == "" || *status == "" {
		usage()
	}
	var mu sync.Mutex
	state := counts{Errors: map[string]int64{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(state)
	})
	go func() {
		server := &http.Server{Addr: *status, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		fmt.Fprintln(os.Stderr, server.ListenAndServe())
		os.Exit(1)
	}()
	stopOnSignal()
	for {
		body, err := request(*url, *timeout)
		mu.Lock()
		if err != nil {
			kind := failureKind(err)
			state.Failed++
			state.Errors[kind]++
			state.Last = kind
			fmt.Printf("%s fail %s\n", time.Now().UTC().Format(time.RFC3339Nano), kind)
		} else {
			state.OK++
			state.Last = strings.TrimSpace(body)
		}
		mu.Unlock()
		time.Sleep(*interval)
	}
}

// request GETs url over a connection of its own and returns the body.
func request(url string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	response, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil {
		return "", err
	}
	if response.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d", response.StatusCode)
	}
	return string(body), nil
}

func failureKind(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return "timeout"
	}
	return err.Error()
}

// stopOnSignal ends the program with status 0 on SIGTERM or SIGINT, as a container should.
func stopOnSignal() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-signals
		os.Exit(0)
	}()
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
