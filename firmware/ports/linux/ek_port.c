/* linux: the firmware as a Linux program (Raspberry Pi, or the host for tests and fuzzing).
   Serves stdin/stdout, or `--tcp PORT` (one client at a time), or `--serial /dev/ttyX` (raw, 115200).
   `--threads N` sizes the model's thread pool (default: online CPUs, capped at the board's cores).
   The counter is CLOCK_MONOTONIC in ns. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include "ek_port.h"

const char ek_port_counter_name[] = "ns";
const uint32_t ek_port_counter_per_us = 1000;
const char ek_port_timer[] = "clock_gettime(CLOCK_MONOTONIC)";
static int in_fd = 0, out_fd = 1, listen_fd = -1;
static uint8_t buf[4096];
static size_t len, pos;
static uint64_t start_ns;

/* the model's thread pool (threads.c of a model generated with threads); weak: a model without one
   (e.g. edgekit.firmware.fake_model) still links, and runs single-threaded */
int edgekit_set_threads(int n) __attribute__((weak));
int edgekit_threads(void) __attribute__((weak));
#define THREADS_MAX 64 /* threads.c's pool capacity */

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void die(const char *what) { perror(what); exit(2); }

static void usage(const char *prog) {
  fprintf(stderr, "usage: %s [--tcp PORT | --serial DEVICE] [--threads 1..%d]\n", prog, THREADS_MAX);
  exit(2);
}

static void serve_tcp(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_ANY)};
  int one = 1;
  if ((listen_fd = socket(AF_INET, SOCK_STREAM, 0)) < 0) die("socket");
  setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(listen_fd, (struct sockaddr *)&a, sizeof a) || listen(listen_fd, 1)) die("--tcp");
  in_fd = out_fd = -1; /* output before a client connects is dropped; hosts resynchronise with % */
}

static void open_serial(const char *dev) {
  struct termios t;
  if ((in_fd = out_fd = open(dev, O_RDWR | O_NOCTTY)) < 0 || tcgetattr(in_fd, &t)) die(dev);
  cfmakeraw(&t);
  cfsetspeed(&t, B115200);
  if (tcsetattr(in_fd, TCSANOW, &t)) die(dev);
}

void ek_port_init(int argc, char **argv) {
  int threads = 0; /* 0: the pool's default */
  start_ns = now_ns();
  signal(SIGPIPE, SIG_IGN); /* a vanished TCP client is an error return, not death */
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--tcp") && i + 1 < argc) serve_tcp(atoi(argv[++i]));
    else if (!strcmp(argv[i], "--serial") && i + 1 < argc) open_serial(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
      if ((threads = atoi(argv[++i])) < 1 || threads > THREADS_MAX) usage(argv[0]);
    } else usage(argv[0]);
  }
  if (edgekit_set_threads) edgekit_set_threads(threads); /* start the workers now, not in the first inference */
}

uint32_t ek_port_threads(void) { return edgekit_threads ? (uint32_t)edgekit_threads() : 1; }

int ek_port_getc(uint32_t timeout_ms) {
  while (pos == len) {
    if (in_fd < 0) {
      int one = 1;
      if ((in_fd = out_fd = accept(listen_fd, 0, 0)) < 0) { if (errno == EINTR) continue; return EK_EOF; }
      setsockopt(in_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    struct pollfd p = {.fd = in_fd, .events = POLLIN};
    int r = poll(&p, 1, timeout_ms ? (int)timeout_ms : -1);
    if (r == 0) return EK_TIMEOUT;
    ssize_t n = r < 0 ? -1 : read(in_fd, buf, sizeof buf);
    if (n > 0) { len = (size_t)n; pos = 0; break; }
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (listen_fd < 0) return EK_EOF; /* stdin or serial closed */
    close(in_fd); /* the client left: wait for the next one */
    in_fd = out_fd = -1;
    if (timeout_ms) return EK_TIMEOUT;
  }
  return buf[pos++];
}

void ek_port_write(const void *data, size_t n) {
  const char *p = data;
  while (n && out_fd >= 0) {
    ssize_t w = write(out_fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w; n -= (size_t)w;
  }
}

uint64_t ek_port_counter(void) { return now_ns() - start_ns; } /* since start, as timestamp% wants */
