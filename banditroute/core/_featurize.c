/*
 * The counting core of banditroute.features, in C, with the signals' formulas (features._signals) and
 * the word cache of the static embedding (embedding._DictCache is its reference).
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
 *   words = low with ASCII punctuation turned into spaces, split on whitespace (str.isspace); with
 *           unspaced_bigrams (v4) the punctuation of scripts written without spaces too, and each run
 *           of such a script inside a word replaced by its overlapping character bigrams (a lone
 *           character stays; features._unspaced_bigrams);
 *   word hashes = zlib's CRC-32 of each word; bigram hash ((h_i * 0x9E3779B1) ^ h_{i+1}) mod 2^32;
 *           bucket = hash & (D - 1), sign = -1 when bit 24 of the hash is set; at most the first
 *           and last MAX_TOKENS / 2 words are hashed;
 *   group counts = number of distinct words of each vocabulary group present (len(group & set(words)));
 *   phrase counts = non-overlapping occurrences in low (str.count);
 *   options = distinct letters matched by findall(r"([\s(])([A-J])[).:]\s") on "\n" + text[-500:].
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
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
#define IN(ch, a, b) ((ch) >= (a) && (ch) <= (b))
/* features._CJK: kana, Han (and extension A), Hangul */
#define IS_CJK(ch) (IN(ch, 0x3040, 0x30ff) || IN(ch, 0x3400, 0x4dbf) || IN(ch, 0x4e00, 0x9fff) || IN(ch, 0xac00, 0xd7af))
/* features._UNSPACED: CJK, Thai and Lao, Myanmar, Khmer */
#define IS_UNSPACED(ch) (IS_CJK(ch) || IN(ch, 0x0e00, 0x0eff) || IN(ch, 0x1000, 0x109f) || IN(ch, 0x1780, 0x17ff))

/* features._UNSPACED_PUNCT: those scripts' punctuation and the full-width forms of ASCII punctuation */
static int is_unspaced_punct(Py_UCS4 c) {
    return c == 0x0e4f || IN(c, 0x0e5a, 0x0e5b) || IN(c, 0x104a, 0x104b) || IN(c, 0x17d4, 0x17d6) ||
           IN(c, 0x17d8, 0x17da) || IN(c, 0x3001, 0x3003) || IN(c, 0x3008, 0x3011) || IN(c, 0x3014, 0x301f) ||
           c == 0x3030 || c == 0x303d || c == 0x30fb || IN(c, 0xff01, 0xff0f) || IN(c, 0xff1a, 0xff20) ||
           IN(c, 0xff3b, 0xff40) || IN(c, 0xff5b, 0xff65);
}

static int is_word(Py_UCS4 ch, int unspaced_bigrams) {
    if (ch < 128) return !is_punct((unsigned char)ch) && !IS_SPACE(ch);
    return !IS_SPACE(ch) && !(unspaced_bigrams && is_unspaced_punct(ch));
}

/* The hash of the ASCII word low[0..len) (marking its vocabulary groups), or of any other word. */
static uint32_t word_crc(const Py_UCS4 *low, Py_ssize_t len, int ascii, char *scratch, int first, unsigned char *seen,
                         double *row) {
    if (!ascii) return crc32_utf8(low, len); /* never a vocabulary word: those are ASCII */
    for (Py_ssize_t k = 0; k < len; k++) scratch[k] = (char)low[k];
    uint32_t crc = crc32_of(scratch, len);
    mark(crc, scratch, len, first, seen, row);
    return crc;
}

/* Counts and buckets of one prompt, given text (escapes replaced) and low = text.lower() as code
 * points; word and crcs are scratch space for len(low) code points and len(low) hashes (each word
 * takes at least one code point and one separator, each bigram one code point of its run). */
static void count_one(const Py_UCS4 *text, Py_ssize_t n, const Py_UCS4 *low, Py_ssize_t nl, Py_UCS4 *word,
                      uint32_t *crcs, unsigned char *seen, double *row, double *buckets, Py_ssize_t dim, int unspaced_bigrams) {
    memset(row, 0, sizeof(double) * (C_FIXED + n_groups + n_phrases));
    memset(seen, 0, n_vocab);
    Py_ssize_t newlines = 0, non_ascii = 0, cjk = 0, other = 0, digits = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = text[i];
        newlines += c == '\n';
        if (c >= 128) {
            non_ascii++;
            cjk += IS_CJK(c);
            other += IN(c, 0x0370, 0x04ff) || IN(c, 0x0590, 0x06ff) || IN(c, 0x0900, 0x0dff) || IN(c, 0x0e00, 0x0e7f);
        }
    }
    for (Py_ssize_t i = 0; i < nl; i++) digits += IN(low[i], '0', '9');

    Py_ssize_t n_words = 0, i = 0;
    char *w = (char *)word;
    while (i < nl) {
        while (i < nl && !is_word(low[i], unspaced_bigrams)) i++;
        if (i >= nl) break;
        Py_ssize_t start = i;
        int ascii = 1, unspaced = 0;
        while (i < nl && is_word(low[i], unspaced_bigrams)) ascii &= low[i] < 128, i++;
        if (unspaced_bigrams && !ascii)
            for (Py_ssize_t j = start; j < i && !unspaced; j++) unspaced = IS_UNSPACED(low[j]);
        if (!unspaced) {
            crcs[n_words] = word_crc(low + start, i - start, ascii, w, n_words == 0, seen, row);
            n_words++;
            continue;
        }
        /* runs of unspaced scripts and of other characters; an unspaced run's bigrams, any other run a word */
        for (Py_ssize_t j = start; j < i;) {
            Py_ssize_t s = j;
            int bigrams = IS_UNSPACED(low[j]), run_ascii = 1;
            while (j < i && IS_UNSPACED(low[j]) == bigrams) run_ascii &= low[j] < 128, j++;
            if (!bigrams || j - s == 1) {
                crcs[n_words] = word_crc(low + s, j - s, run_ascii, w, n_words == 0, seen, row);
                n_words++;
            } else {
                for (Py_ssize_t k = s; k + 1 < j; k++) crcs[n_words++] = crc32_utf8(low + k, 2);
            }
        }
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
    s->crcs = PyMem_Malloc(sizeof(uint32_t) * s->cap);
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
static int count_prompt(PyObject *s, Scratch *sc, unsigned char *seen, double *row, double *buckets, Py_ssize_t dim,
                        int unspaced_bigrams) {
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
        count_one(sc->text, n, sc->low, n, sc->word, sc->crcs, seen, row, buckets, dim, unspaced_bigrams);
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
            count_one(sc->text, n, sc->low, m, sc->word, sc->crcs, seen, row, buckets, dim, unspaced_bigrams);
            done = 1;
        }
    }
    Py_DECREF(text);
    Py_DECREF(low);
    return done;
}

/* count_many(prompts: list, counts: float64 (n, n_counts) buffer, buckets: float64 (n, D) buffer, unspaced_bigrams: bool)
 * -> list of the indices it left to the Python path (non-strings, lone surrogates). */
static PyObject *count_many(PyObject *self, PyObject *args) {
    PyObject *prompts, *counts_obj, *buckets_obj;
    int unspaced_bigrams = 0;
    if (!PyArg_ParseTuple(args, "O!OO|p", &PyList_Type, &prompts, &counts_obj, &buckets_obj, &unspaced_bigrams)) return NULL;
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
                                  (double *)bb.buf + r * bb.shape[1], bb.shape[1], unspaced_bigrams);
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

/* ---- The signals (features._signals is the specification) -------------------------------------------
 *
 * Each signal j is a function of a numerator, the sum of some counts plus the number of some other
 * counts that are positive (exact: small integers), by its kind: log1p of the count over a divisor
 * capped at 1 (the two lengths), squash n / (n + a), presence n > 0, share min(n / max(chars, 1) * a, b),
 * options min(n / 5, 1), or n == 2. The same operations in the same order as the numpy reference, so
 * the same doubles. */
enum { K_LOG, K_SQUASH, K_PRESENT, K_SHARE, K_OPTIONS, K_TWO };
#define MAX_SIGNALS 64
#define MAX_TERMS 16
static int n_signals = 0, chars_col = 0;
static int sig_kind[MAX_SIGNALS], sig_n_add[MAX_SIGNALS], sig_n_pos[MAX_SIGNALS];
static int sig_add[MAX_SIGNALS][MAX_TERMS], sig_pos[MAX_SIGNALS][MAX_TERMS];
static double sig_a[MAX_SIGNALS], sig_b[MAX_SIGNALS];

static int int_list(PyObject *seq, int *out, int limit, const char *what) {
    PyObject *f = PySequence_Fast(seq, what);
    if (f == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(f);
    if (n > limit) {
        Py_DECREF(f);
        PyErr_Format(PyExc_ValueError, "too many %s", what);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(f, i));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(f);
            return -1;
        }
        out[i] = (int)v;
    }
    Py_DECREF(f);
    return (int)n;
}

/* configure_signals(chars_col, [(kind, added columns, positive columns, a, b), ...]) */
static PyObject *configure_signals(PyObject *self, PyObject *args) {
    PyObject *specs;
    int col;
    if (!PyArg_ParseTuple(args, "iO", &col, &specs)) return NULL;
    PyObject *f = PySequence_Fast(specs, "signals must be a sequence");
    if (f == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(f);
    n_signals = 0;
    if (n > MAX_SIGNALS) {
        Py_DECREF(f);
        PyErr_SetString(PyExc_ValueError, "too many signals");
        return NULL;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *add, *pos;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(f, j), "iOOdd", &sig_kind[j], &add, &pos, &sig_a[j], &sig_b[j]) ||
            (sig_n_add[j] = int_list(add, sig_add[j], MAX_TERMS, "added columns")) < 0 ||
            (sig_n_pos[j] = int_list(pos, sig_pos[j], MAX_TERMS, "positive columns")) < 0) {
            Py_DECREF(f);
            return NULL;
        }
    }
    Py_DECREF(f);
    chars_col = col;
    n_signals = (int)n;
    Py_RETURN_NONE;
}

/* signals(counts (n, width) float64, out (n, dim) float64, first column): the signals into out's columns. */
static PyObject *signals(PyObject *self, PyObject *args) {
    PyObject *counts_obj, *out_obj;
    Py_ssize_t first;
    if (!PyArg_ParseTuple(args, "OOn", &counts_obj, &out_obj, &first)) return NULL;
    Py_buffer cb, ob;
    if (PyObject_GetBuffer(counts_obj, &cb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (PyObject_GetBuffer(out_obj, &ob, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&cb);
        return NULL;
    }
    PyObject *result = NULL;
    if (!n_signals || cb.ndim != 2 || ob.ndim != 2 || strcmp(cb.format, "d") || strcmp(ob.format, "d") ||
        cb.shape[0] != ob.shape[0] || first < 0 || first + n_signals > ob.shape[1] || chars_col >= cb.shape[1]) {
        PyErr_SetString(PyExc_ValueError, "configure_signals() first; counts (n, width) and out (n, dim) float64");
        goto done;
    }
    for (int j = 0; j < n_signals; j++)
        for (int t = 0; t < sig_n_add[j] + sig_n_pos[j]; t++)
            if ((t < sig_n_add[j] ? sig_add[j][t] : sig_pos[j][t - sig_n_add[j]]) >= cb.shape[1]) {
                PyErr_SetString(PyExc_ValueError, "a signal names a column outside the counts");
                goto done;
            }
    for (Py_ssize_t r = 0; r < cb.shape[0]; r++) {
        const double *c = (const double *)cb.buf + r * cb.shape[1];
        double *o = (double *)ob.buf + r * ob.shape[1] + first;
        double chars = c[chars_col] > 1.0 ? c[chars_col] : 1.0;
        for (int j = 0; j < n_signals; j++) {
            double v = 0.0;
            for (int t = 0; t < sig_n_add[j]; t++) v += c[sig_add[j][t]];
            for (int t = 0; t < sig_n_pos[j]; t++) v += c[sig_pos[j][t]] > 0.0;
            switch (sig_kind[j]) {
            case K_LOG: v = log1p(v) / sig_a[j]; o[j] = v < 1.0 ? v : 1.0; break;
            case K_SQUASH: o[j] = v / (v + sig_a[j]); break;
            case K_PRESENT: o[j] = v > 0.0; break;
            case K_SHARE: v = v / chars * sig_a[j]; o[j] = v < sig_b[j] ? v : sig_b[j]; break;
            case K_OPTIONS: v = v / 5.0; o[j] = v < 1.0 ? v : 1.0; break;
            default: o[j] = v == 2.0; break;
            }
        }
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&cb);
    PyBuffer_Release(&ob);
    return result;
}

/* ---- The embedding's word cache (banditroute.core.embedding) ------------------------------------------
 *
 * WordCache(capacity, max_words) maps a word (its UTF-8 bytes) to a row of the caller's table of word
 * vectors, rows handed out in insertion order 0, 1, 2, ...; the caller fills a row when its word is
 * inserted. sum() adds a prompt's rows in word order, as embedding.words_of splits it, the words found
 * here (ascii_words, unicode_words; the first and last max_words / 2 of a longer prompt) or, for text
 * without UTF-8, passed by the caller as words_of's list.
 * The same rows in the same order as the Python dict it replaces, so the same sums to the bit.
 */
typedef struct {
    Py_ssize_t off, len; /* the word's bytes in the arena */
} CacheKey;

/* A slot of the open-addressing table: the word's hash, row and length, and its first SLOT_HEAD bytes,
 * so that most words are found by reading one slot (one cache line), not the key and the arena too. */
#define SLOT_HEAD 16
typedef struct {
    uint64_t hash;
    int32_t row1; /* row + 1; 0 = empty */
    int32_t len;
    char head[SLOT_HEAD];
} Slot;

typedef struct {
    PyObject_HEAD
    Py_ssize_t capacity, size, max_words;
    uint32_t slot_mask;
    Slot *slots; /* linear probing; aligned to its size (slot_mem is the allocation) */
    void *slot_mem;
    CacheKey *keys;  /* by row */
    char *arena;
    Py_ssize_t arena_len, arena_cap;
    Py_ssize_t *rows, rows_cap;            /* scratch: the row of each word of one sum */
    uint64_t *hashes;                      /* scratch: the hash of each word of one sum */
    Py_ssize_t hashes_cap;
    Py_ssize_t *spans, spans_cap;          /* scratch: (start, length) of each word of an ASCII prompt */
    char *low;
    Py_ssize_t low_cap;
} WordCache;

/* How many words ahead sum() asks for the memory it will read (the lookups are cache misses). */
#define PREFETCH_AHEAD 8

#define ARENA_LIMIT ((Py_ssize_t)64 << 20) /* bytes of cached words before the cache starts over */

static uint64_t fnv1a(const char *s, Py_ssize_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static int grow(void **buf, Py_ssize_t *cap, Py_ssize_t need, size_t item) {
    if (need <= *cap) return 0;
    Py_ssize_t c = need > 2 * *cap ? need : 2 * *cap;
    void *p = PyMem_Realloc(*buf, c * item);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *buf = p;
    *cap = c;
    return 0;
}

static void wc_clear(WordCache *c) {
    memset(c->slots, 0, sizeof(Slot) * ((size_t)c->slot_mask + 1));
    c->size = 0;
    c->arena_len = 0;
}

static int slot_holds(const WordCache *c, const Slot *s, const char *w, Py_ssize_t n, uint64_t h) {
    if (s->hash != h || s->len != n) return 0;
    if (n <= SLOT_HEAD) return memcmp(s->head, w, n) == 0;
    return memcmp(s->head, w, SLOT_HEAD) == 0 &&
           memcmp(c->arena + c->keys[s->row1 - 1].off + SLOT_HEAD, w + SLOT_HEAD, n - SLOT_HEAD) == 0;
}

/* The row of word w, or -1. */
static Py_ssize_t wc_find(const WordCache *c, const char *w, Py_ssize_t n, uint64_t h) {
    for (uint32_t slot = (uint32_t)h & c->slot_mask;; slot = (slot + 1) & c->slot_mask) {
        const Slot *s = &c->slots[slot];
        if (s->row1 == 0) return -1;
        if (slot_holds(c, s, w, n, h)) return s->row1 - 1;
    }
}

static int wc_init(WordCache *self, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"capacity", "max_words", NULL};
    Py_ssize_t capacity, max_words;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nn", kw, &capacity, &max_words)) return -1;
    if (capacity < 1 || capacity > (1 << 28) || max_words < 2) {
        PyErr_SetString(PyExc_ValueError, "capacity must be in [1, 2^28] and max_words at least 2");
        return -1;
    }
    uint32_t slots = 1;
    while (slots < 2 * (uint64_t)capacity) slots <<= 1;
    PyMem_Free(self->slot_mem);
    PyMem_Free(self->keys);
    self->slot_mem = PyMem_Calloc((size_t)slots + 1, sizeof(Slot));
    self->keys = PyMem_Malloc(sizeof(CacheKey) * capacity);
    if (self->slot_mem == NULL || self->keys == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    /* one slot per half cache line: align the table to a slot's size */
    self->slots = (Slot *)(((uintptr_t)self->slot_mem + sizeof(Slot) - 1) & ~(uintptr_t)(sizeof(Slot) - 1));
    self->slot_mask = slots - 1;
    self->capacity = capacity;
    self->max_words = max_words;
    self->size = self->arena_len = 0;
    return 0;
}

static void wc_dealloc(WordCache *self) {
    PyMem_Free(self->slot_mem);
    PyMem_Free(self->keys);
    PyMem_Free(self->arena);
    PyMem_Free(self->rows);
    PyMem_Free(self->hashes);
    PyMem_Free(self->spans);
    PyMem_Free(self->low);
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* The words of an ASCII prompt as (start, length) spans of self->low; returns their number or -1. */
static Py_ssize_t ascii_words(WordCache *c, const char *src, Py_ssize_t n) {
    if (grow((void **)&c->low, &c->low_cap, n + 1, 1) < 0) return -1;
    Py_ssize_t count = 0, i = 0;
    char *low = c->low;
    for (Py_ssize_t k = 0; k < n; k++) {
        unsigned char ch = (unsigned char)src[k];
        low[k] = (char)((ch >= 'A' && ch <= 'Z') ? ch + 32 : is_punct(ch) ? ' ' : ch);
    }
    while (i < n) {
        while (i < n && IS_SPACE((Py_UCS4)(unsigned char)low[i])) i++;
        if (i >= n) break;
        Py_ssize_t start = i;
        while (i < n && !IS_SPACE((Py_UCS4)(unsigned char)low[i])) i++;
        if (grow((void **)&c->spans, &c->spans_cap, 2 * (count + 1), sizeof(Py_ssize_t)) < 0) return -1;
        c->spans[2 * count] = start;
        c->spans[2 * count + 1] = i - start;
        count++;
    }
    if (count > c->max_words) { /* keep the first and the last max_words / 2 */
        Py_ssize_t half = c->max_words / 2;
        memmove(c->spans + 2 * half, c->spans + 2 * (count - half), sizeof(Py_ssize_t) * 2 * half);
        count = 2 * half;
    }
    return count;
}

/* BERT's "Chinese character" blocks (embedding._CJK_CLASS): each such character is a word of its own. */
static int is_cjk_char(Py_UCS4 ch) {
    return (ch >= 0x3400 && ch <= 0x4DBF) || (ch >= 0x4E00 && ch <= 0x9FFF) || (ch >= 0xF900 && ch <= 0xFAFF) ||
           (ch >= 0x20000 && ch <= 0x2FA1F);
}

/* The words of a non-ASCII prompt as spans of self->low, which holds the UTF-8 of prompt.lower(); as
 * embedding._WORD finds them: each CJK character, and each maximal run of other word characters but "_"
 * (re's \w: Py_UNICODE_ISALNUM or "_"). A prompt that is ASCII once lower-cased takes the ASCII rule, as
 * in words_of. Returns their number, -1 on error, or -2 for text without UTF-8 (lone surrogates). */
static Py_ssize_t unicode_words(WordCache *c, PyObject *text) {
    PyObject *low = PyObject_CallMethod(text, "lower", NULL);
    if (low == NULL) return -1;
    Py_ssize_t count;
    if (PyUnicode_IS_ASCII(low)) {
        count = ascii_words(c, (const char *)PyUnicode_DATA(low), PyUnicode_GET_LENGTH(low));
        Py_DECREF(low);
        return count;
    }
    Py_ssize_t nbytes;
    const char *utf8 = PyUnicode_AsUTF8AndSize(low, &nbytes);
    if (utf8 == NULL || grow((void **)&c->low, &c->low_cap, nbytes + 1, 1) < 0) {
        Py_DECREF(low);
        if (utf8 != NULL || !PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return -1;
        PyErr_Clear();
        return -2;
    }
    memcpy(c->low, utf8, nbytes);
    int kind = PyUnicode_KIND(low);
    const void *data = PyUnicode_DATA(low);
    Py_ssize_t n = PyUnicode_GET_LENGTH(low), at = 0, start = -1;
    count = 0;
    for (Py_ssize_t k = 0; k <= n; k++) {
        Py_UCS4 ch = k < n ? PyUnicode_READ(kind, data, k) : 0;
        int width = ch < 0x80 ? 1 : ch < 0x800 ? 2 : ch < 0x10000 ? 3 : 4;
        int cjk = is_cjk_char(ch), in_word = k < n && !cjk && ch != '_' && Py_UNICODE_ISALNUM(ch);
        if (!in_word && start >= 0) { /* a run of word characters ends here */
            if (grow((void **)&c->spans, &c->spans_cap, 2 * (count + 1), sizeof(Py_ssize_t)) < 0) goto fail;
            c->spans[2 * count] = start;
            c->spans[2 * count + 1] = at - start;
            count++;
            start = -1;
        }
        if (cjk) {
            if (grow((void **)&c->spans, &c->spans_cap, 2 * (count + 1), sizeof(Py_ssize_t)) < 0) goto fail;
            c->spans[2 * count] = at;
            c->spans[2 * count + 1] = width;
            count++;
        } else if (in_word && start < 0) {
            start = at;
        }
        at += width;
    }
    Py_DECREF(low);
    if (count > c->max_words) {
        Py_ssize_t half = c->max_words / 2;
        memmove(c->spans + 2 * half, c->spans + 2 * (count - half), sizeof(Py_ssize_t) * 2 * half);
        count = 2 * half;
    }
    return count;
fail:
    Py_DECREF(low);
    return -1;
}

/* The bytes of word i: from the prompt's spans, or from the list of words. */
static const char *word_at(WordCache *c, PyObject *list, Py_ssize_t i, Py_ssize_t *n) {
    if (list == NULL) {
        *n = c->spans[2 * i + 1];
        return c->low + c->spans[2 * i];
    }
    PyObject *w = PyList_GET_ITEM(list, i);
    if (!PyUnicode_Check(w)) {
        PyErr_SetString(PyExc_TypeError, "words must be strings");
        return NULL;
    }
    return PyUnicode_AsUTF8AndSize(w, n);
}

/* sum(text, table, out, make_room) -> None after out = the sum, in word order, of table[row(w)]; or the
 * list of words not cached (nothing summed); or False for a str with lone surrogates (the caller passes
 * its words). text: a prompt or a list of words. table: float32 (rows, dims); out: float64 (dims,), summed in
 * float64. make_room: first start the cache over if the text's words might not fit in it. */
static PyObject *wc_sum(WordCache *self, PyObject *args) {
    PyObject *text, *table_obj, *out_obj;
    int make_room;
    if (!PyArg_ParseTuple(args, "OOOp", &text, &table_obj, &out_obj, &make_room)) return NULL;
    PyObject *list = NULL;
    Py_ssize_t n;
    if (PyUnicode_Check(text)) {
        n = PyUnicode_IS_ASCII(text) ? ascii_words(self, (const char *)PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text))
                                     : unicode_words(self, text);
        if (n == -2) Py_RETURN_FALSE;
        if (n < 0) return NULL;
    } else if (PyList_Check(text)) {
        list = text;
        n = PyList_GET_SIZE(list);
    } else {
        PyErr_SetString(PyExc_TypeError, "text must be a str or a list of words");
        return NULL;
    }
    if (make_room && (self->size + n > self->capacity || self->arena_len > ARENA_LIMIT)) wc_clear(self);
    if (grow((void **)&self->rows, &self->rows_cap, n ? n : 1, sizeof(Py_ssize_t)) < 0 ||
        grow((void **)&self->hashes, &self->hashes_cap, n ? n : 1, sizeof(uint64_t)) < 0)
        return NULL;
    /* Hash every word first, asking for each one's slot, so that the lookups' cache misses overlap. */
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len;
        const char *w = word_at(self, list, i, &len);
        if (w == NULL) return NULL;
        self->hashes[i] = fnv1a(w, len);
        __builtin_prefetch(&self->slots[(uint32_t)self->hashes[i] & self->slot_mask]);
    }
    PyObject *missing = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len;
        const char *w = word_at(self, list, i, &len);
        self->rows[i] = wc_find(self, w, len, self->hashes[i]);
        if (self->rows[i] < 0) {
            PyObject *word = list ? Py_NewRef(PyList_GET_ITEM(list, i)) : PyUnicode_FromStringAndSize(w, len);
            if (word == NULL || (missing == NULL && (missing = PyList_New(0)) == NULL) ||
                PyList_Append(missing, word) < 0) {
                Py_XDECREF(word);
                Py_XDECREF(missing);
                return NULL;
            }
            Py_DECREF(word);
        }
    }
    if (missing != NULL) return missing;
    Py_buffer tb, ob;
    if (PyObject_GetBuffer(table_obj, &tb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (PyObject_GetBuffer(out_obj, &ob, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&tb);
        return NULL;
    }
    PyObject *result = NULL;
    if (tb.ndim != 2 || ob.ndim != 1 || strcmp(tb.format, "f") || strcmp(ob.format, "d") || tb.shape[1] != ob.shape[0] ||
        tb.shape[0] < self->size) {
        PyErr_SetString(PyExc_ValueError, "expected a float32 table (at least the cached rows, dims) and a float64 (dims,)");
        goto done;
    }
    Py_ssize_t dims = ob.shape[0];
    double *out = (double *)ob.buf;
    const float *table = (const float *)tb.buf;
    for (Py_ssize_t j = 0; j < dims; j++) out[j] = 0.0;
    for (Py_ssize_t i = 0; i < n && i < PREFETCH_AHEAD; i++)
        for (Py_ssize_t j = 0; j < dims; j += 16) __builtin_prefetch(table + self->rows[i] * dims + j);
    for (Py_ssize_t i = 0; i < n; i++) { /* the first row is copied, not added to zeros: -0.0 stays -0.0 */
        if (i + PREFETCH_AHEAD < n)
            for (Py_ssize_t j = 0; j < dims; j += 16) __builtin_prefetch(table + self->rows[i + PREFETCH_AHEAD] * dims + j);
        const float *v = table + self->rows[i] * dims;
        if (i == 0)
            for (Py_ssize_t j = 0; j < dims; j++) out[j] = v[j];
        else
            for (Py_ssize_t j = 0; j < dims; j++) out[j] += v[j];
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&tb);
    PyBuffer_Release(&ob);
    return result;
}

/* insert(words) -> the row given to each word, -1 for a word cached already (or earlier in the list). */
static PyObject *wc_insert(WordCache *self, PyObject *words) {
    if (!PyList_Check(words)) {
        PyErr_SetString(PyExc_TypeError, "words must be a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(words);
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len;
        const char *w = word_at(self, words, i, &len);
        if (w == NULL) goto fail;
        if (len > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "a word longer than 2^31 - 1 bytes");
            goto fail;
        }
        uint64_t h = fnv1a(w, len);
        Py_ssize_t row = -1;
        if (wc_find(self, w, len, h) < 0) {
            if (self->size >= self->capacity) {
                PyErr_SetString(PyExc_OverflowError, "the word cache is full: sum(..., make_room=True) first");
                goto fail;
            }
            if (grow((void **)&self->arena, &self->arena_cap, self->arena_len + len + 1, 1) < 0) goto fail;
            memcpy(self->arena + self->arena_len, w, len);
            row = self->size++;
            self->keys[row] = (CacheKey){self->arena_len, len};
            self->arena_len += len;
            uint32_t slot = (uint32_t)h & self->slot_mask;
            while (self->slots[slot].row1) slot = (slot + 1) & self->slot_mask;
            Slot *s = &self->slots[slot];
            *s = (Slot){h, (int32_t)(row + 1), (int32_t)len, {0}};
            memcpy(s->head, w, len < SLOT_HEAD ? len : SLOT_HEAD);
        }
        PyObject *r = PyLong_FromSsize_t(row);
        if (r == NULL) goto fail;
        PyList_SET_ITEM(out, i, r);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyObject *wc_clear_method(WordCache *self, PyObject *Py_UNUSED(ignored)) {
    wc_clear(self);
    Py_RETURN_NONE;
}

static Py_ssize_t wc_len(WordCache *self) { return self->size; }

static PyMethodDef wc_methods[] = {
    {"sum", (PyCFunction)wc_sum, METH_VARARGS,
     "sum(text, table, out, make_room) -> None (out = the rows' sum), the words not cached, or False for "
     "a non-ASCII str."},
    {"insert", (PyCFunction)wc_insert, METH_O, "insert(words) -> the row of each new word, -1 for one cached already."},
    {"clear", (PyCFunction)wc_clear_method, METH_NOARGS, "Forget every word."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot wc_slots[] = {
    {Py_tp_init, wc_init},
    {Py_tp_dealloc, wc_dealloc},
    {Py_tp_methods, wc_methods},
    {Py_sq_length, wc_len},
    {Py_tp_doc, "WordCache(capacity, max_words): word -> row of the embedding's word table (see the C source)."},
    {0, NULL},
};

static PyType_Spec wc_spec = {"banditroute.core._featurize.WordCache", sizeof(WordCache), 0, Py_TPFLAGS_DEFAULT,
                              wc_slots};

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(groups, first_word_group, phrases) -> row width: the vocabulary groups (distinct words "
     "counted), the group whose membership of the first word is reported, and the phrases counted."},
    {"configure_signals", configure_signals, METH_VARARGS,
     "configure_signals(chars_col, [(kind, added columns, positive columns, a, b), ...]): the signals' formulas."},
    {"signals", signals, METH_VARARGS, "signals(counts, out, first): the signals of each row into out[:, first:]."},
    {"count_many", count_many, METH_VARARGS,
     "count_many(prompts, counts, buckets, unspaced_bigrams=False) -> indices left to the Python path (non-str, lone "
     "surrogates)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_featurize", "Counting core of banditroute.core.features.",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__featurize(void) {
    crc_init();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    PyObject *wc = PyType_FromSpec(&wc_spec);
    if (wc == NULL || PyModule_AddObject(m, "WordCache", wc) < 0) {
        Py_XDECREF(wc);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
