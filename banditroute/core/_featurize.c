/*
 * The counting core of banditroute.features, in C.
 *
 * features.py is the specification: for each prompt it computes a vector of counts (layout in
 * features.COUNTS) and the signed hashed bucket counts of its words and bigrams, then turns them
 * into features with the same numpy formulas whichever path counted. This module computes the
 * same counts several times faster (non-strings, and text with lone surrogates, are left to the
 * Python path); tests check that both paths give identical vectors on every prompt of the shared
 * benchmark data and on generated text.
 *
 * What it mirrors:
 *   text  = prompt with each two-character "\n" escape replaced by a newline (left to right,
 *           non-overlapping, as str.replace);
 *   low   = text.lower() (done here for ASCII; Python's own lower() for other text);
 *   words = low with ASCII punctuation turned into spaces, split on whitespace (str.isspace);
 *   word hashes = zlib's CRC-32 of each word; bigram hash ((h_i * 0x9E3779B1) ^ h_{i+1}) mod 2^32;
 *           bucket = hash & (D - 1), sign = -1 when bit 24 of the hash is set; at most the first
 *           and last MAX_TOKENS / 2 words are hashed;
 *   group counts = number of distinct words of each vocabulary group present (len(group & set(words)));
 *   phrase counts = non-overlapping occurrences in low (str.count);
 *   options = distinct letters matched by findall(r"([\s(])([A-J])[).:]\s") on "\n" + text[-500:].
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_TOKENS 2048
#define MAX_VOCAB 256
#define VOCAB_SLOTS 1024 /* open addressing on the CRC; a power of two above 2 x MAX_VOCAB */
#define MAX_PHRASES 64

/* Fixed counts at the start of each row; features.COUNTS names them in this order. */
enum { C_CHARS, C_WORDS, C_NEWLINES, C_DIGITS, C_OPTIONS, C_ENDS_QUESTION, C_FIRST_IN_GROUP,
       C_NON_ASCII, C_CJK, C_OTHER_SCRIPT, C_FIXED };

static uint32_t crc_table[256];

typedef struct {
    uint32_t crc;
    int group;
    int index; /* position in the vocabulary, for the per-prompt "seen" marks */
    char *word;
    Py_ssize_t len;
} Entry;

static Entry vocab[MAX_VOCAB];
static int n_vocab = 0;
static int slots[VOCAB_SLOTS]; /* index into vocab + 1; 0 = empty */
static int n_groups = 0;
static int first_word_group = -1;
static char **phrases = NULL;
static Py_ssize_t *phrase_lens = NULL;
static int n_phrases = 0;
/* The phrases by first byte, for one pass over the text: phrase_head[b] is the first phrase starting
 * with byte b (-1 if none), phrase_next[k] the next one after phrase k. */
static int phrase_head[128];
static int phrase_next[MAX_PHRASES];
/* A filter on where a phrase can start: phrase_pair[a][b] when some phrase starts with bytes a, b;
 * phrase_single[a] when the one-byte phrase a is one of them. Most positions fail it at once. */
static unsigned char phrase_pair[128][128];
static unsigned char phrase_single[128];
static int configured = 0;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc32_of(const char *s, Py_ssize_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < n; i++) c = crc_table[(c ^ (unsigned char)s[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static int is_punct(unsigned char c) {
    return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
}

static void free_config(void) {
    for (int i = 0; i < n_vocab; i++) PyMem_Free(vocab[i].word);
    for (int i = 0; i < n_phrases; i++) PyMem_Free(phrases[i]);
    PyMem_Free(phrases);
    PyMem_Free(phrase_lens);
    phrases = NULL;
    phrase_lens = NULL;
    n_vocab = n_phrases = n_groups = 0;
    memset(slots, 0, sizeof(slots));
    configured = 0;
}

static char *copy_ascii(PyObject *s, Py_ssize_t *len) {
    if (!PyUnicode_Check(s) || !PyUnicode_IS_ASCII(s)) {
        PyErr_SetString(PyExc_ValueError, "vocabulary entries must be ASCII strings");
        return NULL;
    }
    const char *data = (const char *)PyUnicode_DATA(s);
    *len = PyUnicode_GET_LENGTH(s);
    char *out = PyMem_Malloc(*len + 1);
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(out, data, *len + 1);
    return out;
}

/* configure(groups: sequence of sequences of str, first_word_group: int, phrases: sequence of str) */
static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *groups, *phrase_seq;
    int first_group;
    if (!PyArg_ParseTuple(args, "OiO", &groups, &first_group, &phrase_seq)) return NULL;
    free_config();
    PyObject *gs = PySequence_Fast(groups, "groups must be a sequence");
    if (gs == NULL) return NULL;
    n_groups = (int)PySequence_Fast_GET_SIZE(gs);
    for (int g = 0; g < n_groups; g++) {
        PyObject *ws = PySequence_Fast(PySequence_Fast_GET_ITEM(gs, g), "each group must be a sequence");
        if (ws == NULL) goto fail_groups;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(ws); i++) {
            if (n_vocab >= MAX_VOCAB) {
                PyErr_SetString(PyExc_ValueError, "vocabulary too large");
                Py_DECREF(ws);
                goto fail_groups;
            }
            Entry *e = &vocab[n_vocab];
            e->word = copy_ascii(PySequence_Fast_GET_ITEM(ws, i), &e->len);
            if (e->word == NULL) {
                Py_DECREF(ws);
                goto fail_groups;
            }
            e->crc = crc32_of(e->word, e->len);
            e->group = g;
            e->index = n_vocab;
            uint32_t slot = e->crc & (VOCAB_SLOTS - 1);
            while (slots[slot]) slot = (slot + 1) & (VOCAB_SLOTS - 1);
            slots[slot] = ++n_vocab;
        }
        Py_DECREF(ws);
    }
    Py_DECREF(gs);
    first_word_group = first_group;
    PyObject *ps = PySequence_Fast(phrase_seq, "phrases must be a sequence");
    if (ps == NULL) goto fail;
    n_phrases = (int)PySequence_Fast_GET_SIZE(ps);
    if (n_phrases > MAX_PHRASES) {
        n_phrases = 0;
        Py_DECREF(ps);
        PyErr_SetString(PyExc_ValueError, "too many phrases");
        goto fail;
    }
    phrases = PyMem_Calloc(n_phrases ? n_phrases : 1, sizeof(char *));
    phrase_lens = PyMem_Calloc(n_phrases ? n_phrases : 1, sizeof(Py_ssize_t));
    if (phrases == NULL || phrase_lens == NULL) {
        Py_DECREF(ps);
        PyErr_NoMemory();
        goto fail;
    }
    for (int i = 0; i < n_phrases; i++) {
        phrases[i] = copy_ascii(PySequence_Fast_GET_ITEM(ps, i), &phrase_lens[i]);
        if (phrases[i] == NULL || phrase_lens[i] == 0) {
            if (phrases[i] != NULL) PyErr_SetString(PyExc_ValueError, "phrases must not be empty");
            n_phrases = i + (phrases[i] != NULL);
            Py_DECREF(ps);
            goto fail;
        }
    }
    Py_DECREF(ps);
    for (int b = 0; b < 128; b++) phrase_head[b] = -1;
    memset(phrase_pair, 0, sizeof(phrase_pair));
    memset(phrase_single, 0, sizeof(phrase_single));
    for (int k = n_phrases - 1; k >= 0; k--) {
        unsigned char b = (unsigned char)phrases[k][0];
        phrase_next[k] = phrase_head[b];
        phrase_head[b] = k;
        if (phrase_lens[k] == 1) phrase_single[b] = 1;
        else phrase_pair[b][(unsigned char)phrases[k][1]] = 1;
    }
    configured = 1;
    return PyLong_FromLong(C_FIXED + n_groups + n_phrases);
fail_groups:
    Py_DECREF(gs);
fail:
    free_config();
    return NULL;
}

/* Mark every vocabulary entry equal to word w (a word may belong to several groups). */
static void mark(uint32_t crc, const char *w, Py_ssize_t n, int first, unsigned char *seen, double *row) {
    uint32_t slot = crc & (VOCAB_SLOTS - 1);
    while (slots[slot]) {
        const Entry *e = &vocab[slots[slot] - 1];
        if (e->crc == crc && e->len == n && memcmp(e->word, w, n) == 0) {
            if (!seen[e->index]) {
                seen[e->index] = 1;
                row[C_FIXED + e->group] += 1.0;
            }
            if (first && e->group == first_word_group) row[C_FIRST_IN_GROUP] = 1.0;
        }
        slot = (slot + 1) & (VOCAB_SLOTS - 1);
    }
}

/* Non-overlapping occurrences of every phrase in s (str.count for each), in one pass: only where
 * the first two characters can start a phrase are the phrases starting with that character
 * compared, and a phrase found at i is not looked for again before i + its length (str.count
 * resumes its search there). */
static void count_phrases(const Py_UCS4 *s, Py_ssize_t n, double *counts) {
    Py_ssize_t next_ok[MAX_PHRASES] = {0};
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 a = s[i], b = i + 1 < n ? s[i + 1] : 128;
        if (a >= 128 || !(phrase_single[a] || (b < 128 && phrase_pair[a][b]))) continue;
        for (int k = phrase_head[a]; k >= 0; k = phrase_next[k]) {
            Py_ssize_t m = phrase_lens[k];
            if (i < next_ok[k] || n - i < m) continue;
            Py_ssize_t j = 1;
            while (j < m && s[i + j] == (unsigned char)phrases[k][j]) j++;
            if (j == m) {
                counts[k] += 1.0;
                next_ok[k] = i + m;
            }
        }
    }
}

static uint32_t crc32_utf8(const Py_UCS4 *w, Py_ssize_t n) {
    uint32_t c = 0xFFFFFFFFu;
    unsigned char buf[4];
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 ch = w[i];
        int len;
        if (ch < 0x80) {
            buf[0] = (unsigned char)ch;
            len = 1;
        } else if (ch < 0x800) {
            buf[0] = 0xC0 | (ch >> 6);
            buf[1] = 0x80 | (ch & 0x3F);
            len = 2;
        } else if (ch < 0x10000) {
            buf[0] = 0xE0 | (ch >> 12);
            buf[1] = 0x80 | ((ch >> 6) & 0x3F);
            buf[2] = 0x80 | (ch & 0x3F);
            len = 3;
        } else {
            buf[0] = 0xF0 | (ch >> 18);
            buf[1] = 0x80 | ((ch >> 12) & 0x3F);
            buf[2] = 0x80 | ((ch >> 6) & 0x3F);
            buf[3] = 0x80 | (ch & 0x3F);
            len = 4;
        }
        for (int k = 0; k < len; k++) c = crc_table[(c ^ buf[k]) & 0xFF] ^ (c >> 8);
    }
    return c ^ 0xFFFFFFFFu;
}

static void add_bucket(double *buckets, uint64_t h, uint64_t mask) {
    buckets[h & mask] += ((h >> 24) & 1) ? -1.0 : 1.0;
}

#define IS_SPACE(ch) Py_UNICODE_ISSPACE(ch)
#define IS_WORD(ch) (!IS_SPACE(ch) && !((ch) < 128 && is_punct((unsigned char)(ch))))
#define IN(ch, a, b) ((ch) >= (a) && (ch) <= (b))

/* Counts and buckets of one prompt, given text (escapes replaced) and low = text.lower() as code
 * points; word and crcs are scratch space for len(low) code points and len(low) / 2 + 1 hashes. */
static void count_one(const Py_UCS4 *text, Py_ssize_t n, const Py_UCS4 *low, Py_ssize_t nl,
                      Py_UCS4 *word, uint32_t *crcs, unsigned char *seen, double *row, double *buckets, Py_ssize_t dim) {
    memset(row, 0, sizeof(double) * (C_FIXED + n_groups + n_phrases));
    memset(seen, 0, n_vocab);
    Py_ssize_t newlines = 0, non_ascii = 0, cjk = 0, other = 0, digits = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = text[i];
        newlines += c == '\n';
        if (c >= 128) {
            non_ascii++;
            cjk += IN(c, 0x3040, 0x30ff) || IN(c, 0x3400, 0x4dbf) || IN(c, 0x4e00, 0x9fff) || IN(c, 0xac00, 0xd7af);
            other += IN(c, 0x0370, 0x04ff) || IN(c, 0x0590, 0x06ff) || IN(c, 0x0900, 0x0dff) || IN(c, 0x0e00, 0x0e7f);
        }
    }
    for (Py_ssize_t i = 0; i < nl; i++) digits += IN(low[i], '0', '9');

    Py_ssize_t n_words = 0, i = 0;
    while (i < nl) {
        while (i < nl && !IS_WORD(low[i])) i++;
        if (i >= nl) break;
        Py_ssize_t start = i;
        int ascii = 1;
        while (i < nl && IS_WORD(low[i])) ascii &= low[i] < 128, i++;
        Py_ssize_t len = i - start;
        uint32_t crc;
        if (ascii) {
            char *w = (char *)word;
            for (Py_ssize_t k = 0; k < len; k++) w[k] = (char)low[start + k];
            crc = crc32_of(w, len);
            mark(crc, w, len, n_words == 0, seen, row);
        } else {
            crc = crc32_utf8(low + start, len); /* never a vocabulary word: those are ASCII */
        }
        crcs[n_words++] = crc;
    }

    /* options: findall of ([\s(])([A-J])[).:]\s over "\n" + text[-500:] */
    Py_ssize_t tail_start = n > 500 ? n - 500 : 0, m = n - tail_start + 1, p = 0;
    unsigned int letters = 0;
#define TAIL(k) ((k) == 0 ? (Py_UCS4)'\n' : text[tail_start + (k) - 1])
    while (p + 3 < m) {
        Py_UCS4 a = TAIL(p), b = TAIL(p + 1), c = TAIL(p + 2), d = TAIL(p + 3);
        if ((IS_SPACE(a) || a == '(') && IN(b, 'A', 'J') && (c == ')' || c == '.' || c == ':') && IS_SPACE(d)) {
            letters |= 1u << (b - 'A');
            p += 4;
        } else {
            p++;
        }
    }
#undef TAIL
    Py_ssize_t end = nl;
    while (end > 0 && IS_SPACE(low[end - 1])) end--;

    row[C_CHARS] = (double)n;
    row[C_WORDS] = (double)n_words;
    row[C_NEWLINES] = (double)newlines;
    row[C_DIGITS] = (double)digits;
    row[C_OPTIONS] = (double)__builtin_popcount(letters);
    row[C_ENDS_QUESTION] = end > 0 && low[end - 1] == '?';
    row[C_NON_ASCII] = (double)non_ascii;
    row[C_CJK] = (double)cjk;
    row[C_OTHER_SCRIPT] = (double)other;
    count_phrases(low, nl, row + C_FIXED + n_groups);

    /* hashing: unigrams then bigrams of the word sequence, clipped to its first and last MAX_TOKENS / 2 */
    memset(buckets, 0, sizeof(double) * dim);
    uint64_t mask = (uint64_t)dim - 1;
    Py_ssize_t nh = n_words;
    if (n_words > MAX_TOKENS) {
        memmove(crcs + MAX_TOKENS / 2, crcs + n_words - MAX_TOKENS / 2, sizeof(uint32_t) * (MAX_TOKENS / 2));
        nh = MAX_TOKENS;
    }
    for (Py_ssize_t k = 0; k < nh; k++) add_bucket(buckets, crcs[k], mask);
    for (Py_ssize_t k = 0; k + 1 < nh; k++)
        add_bucket(buckets, (((uint64_t)crcs[k] * 0x9E3779B1ull) ^ crcs[k + 1]) & 0xFFFFFFFFull, mask);
}

typedef struct {
    Py_ssize_t cap;
    Py_UCS4 *text, *low, *word;
    uint32_t *crcs;
} Scratch;

static int reserve(Scratch *s, Py_ssize_t n) {
    if (n + 1 <= s->cap) return 0;
    s->cap = n + 1 > 2 * s->cap ? n + 1 : 2 * s->cap;
    PyMem_Free(s->text);
    PyMem_Free(s->low);
    PyMem_Free(s->word);
    PyMem_Free(s->crcs);
    s->text = PyMem_Malloc(sizeof(Py_UCS4) * s->cap);
    s->low = PyMem_Malloc(sizeof(Py_UCS4) * s->cap);
    s->word = PyMem_Malloc(sizeof(Py_UCS4) * s->cap);
    s->crcs = PyMem_Malloc(sizeof(uint32_t) * (s->cap / 2 + 1));
    if (!s->text || !s->low || !s->word || !s->crcs) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void release(Scratch *s) {
    PyMem_Free(s->text);
    PyMem_Free(s->low);
    PyMem_Free(s->word);
    PyMem_Free(s->crcs);
}

/* 1 if the string holds a lone surrogate (its words cannot be UTF-8 encoded: left to Python). */
static int has_surrogate(const Py_UCS4 *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (IN(s[i], 0xD800, 0xDFFF)) return 1;
    return 0;
}

/* Count one prompt into row/buckets: 1 done, 0 left to the Python path, -1 error. */
static int count_prompt(PyObject *s, Scratch *sc, unsigned char *seen, double *row, double *buckets, Py_ssize_t dim) {
    if (!PyUnicode_Check(s)) return 0;
    Py_ssize_t len = PyUnicode_GET_LENGTH(s);
    if (PyUnicode_IS_ASCII(s)) {
        if (reserve(sc, len) < 0) return -1;
        const char *src = (const char *)PyUnicode_DATA(s);
        Py_ssize_t n = 0;
        for (Py_ssize_t i = 0; i < len; i++) {
            char c = src[i];
            if (c == '\\' && i + 1 < len && src[i + 1] == 'n') c = '\n', i++;
            sc->text[n] = (unsigned char)c;
            sc->low[n] = (unsigned char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
            n++;
        }
        count_one(sc->text, n, sc->low, n, sc->word, sc->crcs, seen, row, buckets, dim);
        return 1;
    }
    /* non-ASCII: Python's own replace and lower (full Unicode case mapping), then the same counting */
    PyObject *esc = PyUnicode_FromString("\\n"), *nl = PyUnicode_FromString("\n");
    PyObject *text = (esc && nl) ? PyUnicode_Replace(s, esc, nl, -1) : NULL;
    Py_XDECREF(esc);
    Py_XDECREF(nl);
    if (text == NULL) return -1;
    PyObject *low = PyObject_CallMethod(text, "lower", NULL);
    if (low == NULL) {
        Py_DECREF(text);
        return -1;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), m = PyUnicode_GET_LENGTH(low);
    int done = -1;
    if (reserve(sc, n > m ? n : m) == 0 && PyUnicode_AsUCS4(text, sc->text, sc->cap, 0) && PyUnicode_AsUCS4(low, sc->low, sc->cap, 0)) {
        done = 0;
        if (!has_surrogate(sc->low, m)) {
            count_one(sc->text, n, sc->low, m, sc->word, sc->crcs, seen, row, buckets, dim);
            done = 1;
        }
    }
    Py_DECREF(text);
    Py_DECREF(low);
    return done;
}

/* count_many(prompts: list, counts: float64 (n, n_counts) buffer, buckets: float64 (n, D) buffer)
 * -> list of the indices it left to the Python path (non-strings, lone surrogates). */
static PyObject *count_many(PyObject *self, PyObject *args) {
    PyObject *prompts, *counts_obj, *buckets_obj;
    if (!PyArg_ParseTuple(args, "O!OO", &PyList_Type, &prompts, &counts_obj, &buckets_obj)) return NULL;
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "configure() first");
        return NULL;
    }
    Py_buffer cb, bb;
    if (PyObject_GetBuffer(counts_obj, &cb, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (PyObject_GetBuffer(buckets_obj, &bb, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&cb);
        return NULL;
    }
    PyObject *left = NULL;
    Scratch sc = {0};
    unsigned char seen[MAX_VOCAB];
    Py_ssize_t n = PyList_GET_SIZE(prompts);
    Py_ssize_t width = C_FIXED + n_groups + n_phrases;
    if (cb.ndim != 2 || bb.ndim != 2 || strcmp(cb.format, "d") || strcmp(bb.format, "d") || cb.shape[0] != n ||
        bb.shape[0] != n || cb.shape[1] != width || bb.shape[1] == 0 || (bb.shape[1] & (bb.shape[1] - 1))) {
        PyErr_Format(PyExc_ValueError, "expected float64 arrays of shapes (%zd, %zd) and (%zd, 2^k)", n, width, n);
        goto done;
    }
    left = PyList_New(0);
    if (left == NULL) goto done;
    for (Py_ssize_t r = 0; r < n; r++) {
        int status = count_prompt(PyList_GET_ITEM(prompts, r), &sc, seen, (double *)cb.buf + r * width,
                                  (double *)bb.buf + r * bb.shape[1], bb.shape[1]);
        if (status < 0) {
            Py_CLEAR(left);
            goto done;
        }
        if (status == 0) {
            PyObject *idx = PyLong_FromSsize_t(r);
            if (idx == NULL || PyList_Append(left, idx) < 0) {
                Py_XDECREF(idx);
                Py_CLEAR(left);
                goto done;
            }
            Py_DECREF(idx);
        }
    }
done:
    release(&sc);
    PyBuffer_Release(&cb);
    PyBuffer_Release(&bb);
    return left;
}

/* sum_rows(words, index, table, out) -> list of the words not in index (nothing summed then), or None
 * after out = sum over words, in order, of table[index[word]] (out is overwritten). The embedding's word
 * cache (banditroute.core.embedding): the same sums, in the same order, as the Python path. */
static PyObject *sum_rows(PyObject *self, PyObject *args) {
    PyObject *words, *index, *table_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "O!O!OO", &PyList_Type, &words, &PyDict_Type, &index, &table_obj, &out_obj))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(words);
    Py_ssize_t *rows = PyMem_Malloc((n ? n : 1) * sizeof(Py_ssize_t));
    if (rows == NULL) return PyErr_NoMemory();
    PyObject *missing = NULL, *result = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyDict_GetItemWithError(index, PyList_GET_ITEM(words, i));
        if (row == NULL) {
            if (PyErr_Occurred() || (missing == NULL && (missing = PyList_New(0)) == NULL) ||
                PyList_Append(missing, PyList_GET_ITEM(words, i)) < 0) {
                Py_CLEAR(missing);
                PyMem_Free(rows);
                return NULL;
            }
            continue;
        }
        rows[i] = PyLong_AsSsize_t(row);
        if (rows[i] == -1 && PyErr_Occurred()) {
            Py_XDECREF(missing);
            PyMem_Free(rows);
            return NULL;
        }
    }
    if (missing != NULL) {
        PyMem_Free(rows);
        return missing;
    }
    Py_buffer tb, ob;
    if (PyObject_GetBuffer(table_obj, &tb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyMem_Free(rows);
        return NULL;
    }
    if (PyObject_GetBuffer(out_obj, &ob, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&tb);
        PyMem_Free(rows);
        return NULL;
    }
    if (tb.ndim != 2 || ob.ndim != 1 || strcmp(tb.format, "d") || strcmp(ob.format, "d") || tb.shape[1] != ob.shape[0]) {
        PyErr_SetString(PyExc_ValueError, "expected a float64 table (rows, dims) and a float64 vector (dims,)");
        goto done;
    }
    Py_ssize_t dims = ob.shape[0];
    double *out = (double *)ob.buf;
    const double *table = (const double *)tb.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (rows[i] < 0 || rows[i] >= tb.shape[0]) {
            PyErr_Format(PyExc_IndexError, "row %zd outside the table", rows[i]);
            goto done;
        }
    }
    for (Py_ssize_t j = 0; j < dims; j++) out[j] = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) { /* the first row is copied, not added to zeros: -0.0 stays -0.0 */
        const double *v = table + rows[i] * dims;
        if (i == 0)
            for (Py_ssize_t j = 0; j < dims; j++) out[j] = v[j];
        else
            for (Py_ssize_t j = 0; j < dims; j++) out[j] += v[j];
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&tb);
    PyBuffer_Release(&ob);
    PyMem_Free(rows);
    return result;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(groups, first_word_group, phrases) -> row width: the vocabulary groups (distinct words "
     "counted), the group whose membership of the first word is reported, and the phrases counted."},
    {"count_many", count_many, METH_VARARGS,
     "count_many(prompts, counts, buckets) -> indices left to the Python path (non-ASCII, non-str)."},
    {"sum_rows", sum_rows, METH_VARARGS,
     "sum_rows(words, index, table, out) -> the words missing from index (nothing summed), or None after "
     "out = the sum, in order, of table[index[w]] over words."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_featurize", "Counting core of banditroute.core.features.",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__featurize(void) {
    crc_init();
    return PyModule_Create(&module);
}
