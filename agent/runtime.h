/* SPDX-License-Identifier: Apache-2.0 */
/* Start-up pieces shared by ambitd and ambit-waypoint (ambit-ca takes some): the tracer from
 * the tracing config and OTEL_* environment, the mesh CA with its certificate store and
 * renewal timer, the signals, and the discovery source (file or Kubernetes). Errors are reported once, here, naming the config. */
#ifndef AMBIT_AGENT_RUNTIME_H
#define AMBIT_AGENT_RUNTIME_H

#include "agent/config.h"
#include "agent/loop.h"
#include "agent/workloads.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/stat.h>

#include "tls/identity.h"

struct otlp_tracer;
struct tls_ca;
struct certstore;
struct ca_client;
struct discovery_file;
struct kube_discovery;

/* The tracer per tracing.* with OTEL_* applied over it. 0; -EINVAL (bad value: a line naming
 * the config went to stderr, exit 2 is right); -ENOMEM. */
int runtime_tracer_new(const struct config *c, const char *prog, struct otlp_tracer **out);

/* Workload certificates. With ca.address: ca.cert is the trust bundle and certificates come
 * from that CA (istiod, ambit-ca) over Istio's certificate API; without it (development
 * only): ca.cert/ca.key sign inside the process. Either way an asynchronous certstore fetches
 * on worker threads, prefetching the wanted identities and renewing at half-life (the agent
 * asks on its workloads' behalf, ImpersonatedIdentity; the waypoint for itself); a timer on
 * l wakes it every minute. With ca.address, ca.cert is watched (RUNTIME_BUNDLE_CHECK_MS): when
 * the file changes (a mounted ConfigMap's symlink swap) and loads, on_roots gets the new
 * bundle (swap it into the TLS contexts; it replaces ca once on_roots returns), and the
 * certificates that do not chain to its first root are renewed now. A bundle that does not
 * load is logged and the old one stays. 0; -EINVAL (bad CA files or address, reported
 * naming the config); -errno. */
#define RUNTIME_BUNDLE_CHECK_MS 2000
struct runtime_identity {
	struct tls_ca *ca;		/* trust anchors; in development mode also the signer */
	struct ca_client *client;	/* ca.address; NULL in development mode */
	struct certstore *certs;
	struct loop *loop;
	struct loop_timer renew;
	/* Called on the loop thread when the store has news (a cert landed or a fetch
	 * failed): resume what waits for a certificate. Set after start; may be NULL. */
	void (*on_certs)(void *arg);
	void *on_certs_arg;
	atomic_bool posted;		/* a news task is queued on the loop */
	/* Called on the loop thread with a reloaded trust bundle (borrowed: valid until the
	 * next reload or stop). Set after start; may be NULL. */
	void (*on_roots)(void *arg, struct tls_ca *roots);
	void *on_roots_arg;
	char *bundle_path;		/* ca.cert, watched with ca.address; NULL otherwise */
	struct stat bundle_st;
	struct loop_timer bundle;
};
int runtime_identity_start(struct runtime_identity *id, struct loop *l, const struct config *c,
			   enum config_role role, const char *prog);
void runtime_identity_stop(struct runtime_identity *id);
/* The identities this process serves (local workloads; the waypoint's own): fetched now
 * when missing, kept fresh, the others dropped. 0 or -ENOMEM (logged). */
int runtime_identity_want(struct runtime_identity *id, const struct spiffe_id *ids, size_t n);
/* For readiness: 0 when every wanted identity has a valid certificate; 1 when it does but the
 * CA's last answer was a failure (why says so: serving with the current certificates);
 * -EAGAIN when some identity has none yet (why names the first and the reason). */
int runtime_identity_status(struct runtime_identity *id, char *why, size_t len);
/* The CA side for the admin API: mode, backend, counters, last error. New reference. */
json_t *runtime_identity_json(struct runtime_identity *id);
/* /certificates: {"certificates": [one per identity], "ca": runtime_identity_json}. */
json_t *runtime_identity_certificates_json(struct runtime_identity *id);
/* Readiness from the certificates: none yet for a wanted identity is 503 "not ready: <why>";
 * a failing CA with valid certificates is 200 "ready" plus a "warning: <why>" line (the
 * process keeps serving); else 200 "ready". */
struct httpd_response;
void runtime_identity_reply_ready(struct runtime_identity *id, struct httpd_response *resp);
/* Registers ambit_ca_* and ambit_certificates_* metrics (loop thread scrape). 0 or -ENOSPC. */
int runtime_identity_metrics(struct runtime_identity *id);

/* SIGTERM and SIGINT as events of loop l: blocks them (and ignores SIGPIPE) and reads them
 * from a signalfd that io registers, calling fn (which reads the signalfd_siginfo records from
 * io->fd) with arg. 0 or -errno (logged). */
int runtime_signals_start(struct loop *l, struct loop_io *io, loop_io_fn fn, void *arg);
/* Unregisters and closes what runtime_signals_start set up; nothing when it did not. */
void runtime_signals_stop(struct loop *l, struct loop_io *io);

/* The drain after SIGTERM: the loop goes on until idle(arg) says nothing is left to serve
 * or the deadline passes (the connections still open are then closed, with a warning),
 * checked every 100 ms, and then stops. */
struct runtime_drain {
	struct loop_timer timer;
	uint64_t deadline_ms;		/* now_mono_ms() clock */
	bool (*idle)(void *arg);
	void *arg;
};
void runtime_drain_init(struct runtime_drain *d, bool (*idle)(void *arg), void *arg);
/* Starts checking on l (the first check is now). */
void runtime_drain_start(struct runtime_drain *d, struct loop *l, uint64_t deadline_ms);
void runtime_drain_stop(struct runtime_drain *d, struct loop *l);

/* Subscribes fn to model updates, then starts the configured source. 0 or -errno (logged). */
struct runtime_discovery {
	struct discovery_file *file;
	struct kube_discovery *kube;
};
/* l7: the waypoint's (also watches Gateway API HTTPRoutes, which a node agent does not use). */
int runtime_discovery_start(struct runtime_discovery *d, const struct config *c, bool l7,
			    model_listener_fn fn, void *arg);
void runtime_discovery_stop(struct runtime_discovery *d);
/* From a model listener (discovery thread): runs fn(arg) on l's thread, or warns that the
 * update applies with the next one (out of memory). */
void runtime_post_model(struct loop *l, loop_task_fn fn, void *arg);
/* /config_dump: cfg (a configuration's JSON, the reference taken over; may be NULL) with
 * d's status added as "discovery_status". Returns cfg. */
json_t *runtime_config_dump(json_t *cfg, struct runtime_discovery *d);

#endif
