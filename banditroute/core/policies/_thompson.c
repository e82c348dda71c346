/*
 * The Monte Carlo core of linear Thompson sampling's probabilities (policies.linear.thompson_wins is
 * its specification and the path taken without a C compiler; tests check that both give the same counts).
 *
 * For rows b of a batch, draws s and models k:
 *     v[b, s, k] = scale[b, k] * z[s, k] + net[b, k]      (two roundings, as numpy's multiply then add)
 *     wins[b, k] = number of draws s whose argmax over k of v[b, s, :] is k
 * with numpy's argmax rules: the first maximum wins a tie, and the first NaN, if any, wins outright.
 * An ineligible model carries net = -inf and never wins unless every model of the row is ineligible.
 * Built with -ffp-contract=off so that the multiply and the add are never fused into one rounding.
 *
 * numpy needs a (B, S, K) temporary and a strided argmax over its short last axis; this loop keeps one
 * row of K values at a time.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

static int get_matrix(PyObject *obj, Py_buffer *view, int writable, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    if (view->ndim != 2 || strcmp(view->format, "d") != 0) {
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous 2-d float64 array", name);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *wins(PyObject *self, PyObject *args) {
    PyObject *scale_obj, *net_obj, *z_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOOO", &scale_obj, &net_obj, &z_obj, &out_obj)) return NULL;
    Py_buffer sc, nt, zz, out;
    if (get_matrix(scale_obj, &sc, 0, "scale") < 0) return NULL;
    if (get_matrix(net_obj, &nt, 0, "net") < 0) goto release_sc;
    if (get_matrix(z_obj, &zz, 0, "z") < 0) goto release_nt;
    if (get_matrix(out_obj, &out, 1, "out") < 0) goto release_zz;
    Py_ssize_t b_rows = sc.shape[0], k_models = sc.shape[1], s_draws = zz.shape[0];
    if (nt.shape[0] != b_rows || nt.shape[1] != k_models || zz.shape[1] != k_models || out.shape[0] != b_rows ||
        out.shape[1] != k_models || k_models < 1) {
        PyErr_SetString(PyExc_ValueError, "expected scale, net and out of shape (B, K), z of shape (S, K), K >= 1");
        PyBuffer_Release(&out);
        goto release_zz;
    }
    const double *scale = (const double *)sc.buf, *net = (const double *)nt.buf, *z = (const double *)zz.buf;
    double *wins_out = (double *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t b = 0; b < b_rows; b++) {
        const double *s_row = scale + b * k_models, *n_row = net + b * k_models;
        double *w_row = wins_out + b * k_models;
        for (Py_ssize_t k = 0; k < k_models; k++) w_row[k] = 0.0;
        for (Py_ssize_t s = 0; s < s_draws; s++) {
            const double *z_row = z + s * k_models;
            double best = s_row[0] * z_row[0];
            best += n_row[0];
            Py_ssize_t arg = 0;
            if (!isnan(best)) {
                for (Py_ssize_t k = 1; k < k_models; k++) {
                    double v = s_row[k] * z_row[k];
                    v += n_row[k];
                    if (isnan(v)) {
                        arg = k;
                        break;
                    }
                    if (v > best) {
                        best = v;
                        arg = k;
                    }
                }
            }
            w_row[arg] += 1.0;
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&out);
    PyBuffer_Release(&zz);
    PyBuffer_Release(&nt);
    PyBuffer_Release(&sc);
    Py_RETURN_NONE;
release_zz:
    PyBuffer_Release(&zz);
release_nt:
    PyBuffer_Release(&nt);
release_sc:
    PyBuffer_Release(&sc);
    return NULL;
}

static PyMethodDef methods[] = {
    {"wins", wins, METH_VARARGS,
     "wins(scale, net, z, out): out[b, k] = the draws s for which k is the argmax of scale[b] * z[s] + net[b]."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_thompson",
                                    "Monte Carlo core of banditroute.core.policies.linear.thompson_wins.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__thompson(void) { return PyModule_Create(&module); }
