// HTTP calls to the Corral API. Same-origin; the session cookie carries the token, and writes
// add the header the server asks of cookie-authenticated writes.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function check(res) {
  if (res.ok) return res;
  let msg = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    if (body && body.error) msg = body.error;
  } catch (_) { /* not JSON */ }
  throw new ApiError(res.status, msg);
}

export async function getJSON(path, { signal } = {}) {
  const res = await check(await fetch(path, { credentials: 'same-origin', signal }));
  return res.json();
}

export async function postJSON(path, body, method = 'POST') {
  const res = await check(await fetch(path, {
    method,
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-Corral-Request': '1' },
    body: JSON.stringify(body ?? {}),
  }));
  return res.json();
}

export async function getBuffer(path) {
  const res = await check(await fetch(path, { credentials: 'same-origin' }));
  return res.arrayBuffer();
}

/** Trade a token (from the URL or the sign-in box) for the session cookie. */
export async function signIn(token) {
  return postJSON('/api/session', { token });
}

/** Sign in with a name and password (the sign-in page); the answer sets the session cookie. */
export async function signInWithPassword(name, password) {
  return postJSON('/api/signin', { name, password });
}
