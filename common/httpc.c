// SPDX-License-Identifier: Apache-2.0
/* libcurl behind a small blocking API: collects or streams a response body with a bound,
 * honours a cancel flag and an idle timeout, and maps curl errors to -errno. */
#include "common/httpc.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HTTPC_DEFAULT_MAX (16u << 20)

struct xfer {
	const struct httpc_request *req;
	struct httpc_response *resp;
	size_t cap;
	size_t max;
	bool too_big;
	bool aborted;
};

int httpc_global_init(void)
{
	return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -EIO;
}

void httpc_global_fini(void)
{
	curl_global_cleanup();
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct xfer *x = userdata;
	size_t n = size * nmemb;

	if (x->req->on_data) {
		if (x->req->on_data(ptr, n, x->req->arg)) {
			x->aborted = true;
			return 0;
		}
		return n;
	}
	if (x->resp->body_len + n > x->max) {
		x->too_big = true;
		return 0;
	}
	if (x->resp->body_len + n + 1 > x->cap) {
		size_t ncap = x->cap ? x->cap : 4096;
		while (ncap < x->resp->body_len + n + 1)
			ncap *= 2;
		char *nb = realloc(x->resp->body, ncap);
		if (!nb)
			return 0;
		x->resp->body = nb;
		x->cap = ncap;
	}
	memcpy(x->resp->body + x->resp->body_len, ptr, n);
	x->resp->body_len += n;
	x->resp->body[x->resp->body_len] = '\0';
	return n;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
	struct xfer *x = userdata;
	size_t n = size * nitems;
	static const char ct[] = "content-type:";

	if (n > sizeof(ct) - 1 && strncasecmp(buf, ct, sizeof(ct) - 1) == 0) {
		const char *v = buf + sizeof(ct) - 1;
		size_t vl = n - (sizeof(ct) - 1);
		while (vl && (*v == ' ' || *v == '\t'))
			v++, vl--;
		while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
			vl--;
		free(x->resp->content_type);
		x->resp->content_type = strndup(v, vl);
	}
	return n;
}

static int on_progress(void *clientp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	struct xfer *x = clientp;
	(void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
	if (x->req->cancel && *x->req->cancel) {
		x->aborted = true;
		return 1;
	}
	return 0;
}

int httpc_do(const struct httpc_request *req, struct httpc_response *resp)
{
	struct xfer x = { .req = req, .resp = resp };
	struct curl_slist *hdrs = NULL;
	char *auth = NULL;
	CURL *c;
	CURLcode rc;
	int err = 0;

	memset(resp, 0, sizeof(*resp));
	x.max = req->max_response ? req->max_response : HTTPC_DEFAULT_MAX;
	c = curl_easy_init();
	if (!c) {
		snprintf(resp->err, sizeof(resp->err), "curl_easy_init failed");
		return -ENOMEM;
	}
	for (const char *const *h = req->headers; h && *h; h++) {
		struct curl_slist *n = curl_slist_append(hdrs, *h);
		if (!n) {
			err = -ENOMEM;
			goto out;
		}
		hdrs = n;
	}
	if (req->bearer_token) {
		if (asprintf(&auth, "Authorization: Bearer %s", req->bearer_token) < 0) {
			auth = NULL;
			err = -ENOMEM;
			goto out;
		}
		struct curl_slist *n = curl_slist_append(hdrs, auth);
		if (!n) {
			err = -ENOMEM;
			goto out;
		}
		hdrs = n;
	}
	curl_easy_setopt(c, CURLOPT_URL, req->url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
			 req->connect_timeout_ms ? req->connect_timeout_ms : 5000L);
	if (req->timeout_ms)
		curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, req->timeout_ms);
	if (req->idle_timeout_s) {
		curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, req->idle_timeout_s);
	}
	if (req->ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, req->ca_file);
	if (req->client_cert)
		curl_easy_setopt(c, CURLOPT_SSLCERT, req->client_cert);
	if (req->client_key)
		curl_easy_setopt(c, CURLOPT_SSLKEY, req->client_key);
	if (hdrs)
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	if (req->method && strcmp(req->method, "GET") != 0)
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
	if (req->body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
	}
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, &x);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);

	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
	curl_off_t retry_after = 0;
	if (curl_easy_getinfo(c, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK && retry_after > 0)
		resp->retry_after_s = retry_after > 86400 ? 86400 : (long)retry_after;
	if (rc != CURLE_OK) {
		if (x.too_big) {
			err = -EFBIG;
			snprintf(resp->err, sizeof(resp->err), "response larger than %zu bytes", x.max);
		} else if (x.aborted) {
			err = -ECANCELED;
			snprintf(resp->err, sizeof(resp->err), "cancelled");
		} else {
			err = rc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT
			    : rc == CURLE_COULDNT_CONNECT   ? -ECONNREFUSED
							    : -EIO;
			snprintf(resp->err, sizeof(resp->err), "%s", curl_easy_strerror(rc));
		}
	}
out:
	if (err == -ENOMEM)
		snprintf(resp->err, sizeof(resp->err), "out of memory");
	free(auth);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(c);
	return err;
}

void httpc_response_fini(struct httpc_response *resp)
{
	if (!resp)
		return;
	free(resp->body);
	free(resp->content_type);
	resp->body = NULL;
	resp->content_type = NULL;
}
