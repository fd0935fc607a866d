"""Specs for gradproof.io: reading .mat / .npz files, mapping names, working out the layout.

Fixtures are written in tmp_path with scipy.io.savemat (MATLAB v5 format, what `save -v7`
reads back as) and numpy.savez. A small 6-4-6 network stands in for the seed's 784-200-784.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.io

from gradproof.errors import DataError, InputError
from gradproof.io import HDF5_SIGNATURE, parse_mapping, read_arrays, read_gradient_file

V, H, M = 6, 4, 3  # visible, hidden, batch


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return {
        "W1": rng.normal(size=(V, H)), "b1": rng.normal(size=H),
        "W2": rng.normal(size=(H, V)), "b2": rng.normal(size=V),
        "x": rng.random((M, V)),
    }


def grads_like(params, prefix="d"):
    rng = np.random.default_rng(1)
    return {f"{prefix}{name}": rng.normal(size=np.shape(value)) for name, value in params.items() if name != "x"}


def save_mat(path, variables):
    scipy.io.savemat(path, variables)
    return path


# ------------------------------------------------------------------------- read_arrays


def test_read_arrays_from_mat_skips_matlab_headers_and_keeps_2d_shapes(tmp_path, arrays):
    path = save_mat(tmp_path / "f.mat", {**arrays, "note": "text"})
    got = read_arrays(path)
    assert set(got) == set(arrays)  # the char array and __header__ are left out
    assert got["b1"].shape == (1, H)  # MATLAB vectors are 2-D
    np.testing.assert_array_equal(got["W1"], arrays["W1"])


def test_read_arrays_from_npz(tmp_path, arrays):
    path = tmp_path / "f.npz"
    np.savez(path, **arrays)
    got = read_arrays(path)
    assert set(got) == set(arrays) and got["b1"].shape == (H,)


def test_a_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_arrays(tmp_path / "nope.mat")


def test_an_unknown_extension_is_a_data_error_naming_the_supported_ones(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("1,2\n")
    with pytest.raises(DataError, match=r"unsupported file type '\.csv'.*\.mat.*\.npz"):
        read_arrays(path)


def write_v73_signature_only(path):
    """The first bytes of a MATLAB v7.3 file: a 512-byte text header, then the HDF5 signature."""
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    path.write_bytes(header.ljust(512, b" ") + HDF5_SIGNATURE + bytes(64))


def test_a_matlab_v73_file_without_h5py_says_how_to_resave_it(tmp_path, monkeypatch):
    path = tmp_path / "f.mat"
    write_v73_signature_only(path)
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if h5py were not installed
    with pytest.raises(DataError, match=r"MATLAB v7\.3 file \(HDF5\).*'-v7'\)`.*pip install h5py"):
        read_arrays(path)


def test_an_unreadable_hdf5_file_says_how_to_resave_it(tmp_path):
    pytest.importorskip("h5py")
    path = tmp_path / "f.mat"
    write_v73_signature_only(path)  # a signature and nothing behind it
    with pytest.raises(DataError, match=r"HDF5 \(MATLAB v7\.3\).*'-v7'"):
        read_arrays(path)


def test_a_matlab_v73_file_is_read_when_h5py_is_installed(tmp_path, arrays):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "f.mat"
    with h5py.File(path, "w", userblock_size=512) as handle:
        for name, value in arrays.items():
            matlab = np.atleast_2d(value)  # MATLAB vectors are 1 x n
            # MATLAB writes column-major data: HDF5 shows the axes reversed.
            handle.create_dataset(name, data=matlab.T).attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as handle:
        handle.write(b"MATLAB 7.3 MAT-file")
    got = read_arrays(path)
    assert set(got) == set(arrays)
    np.testing.assert_array_equal(got["W1"], arrays["W1"])
    assert got["b1"].shape == (1, H)


def test_a_pickled_npz_is_refused(tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, W1=np.zeros((2, 2)), meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="'meta' is a pickled object array.*refuses"):
        read_arrays(path)


def test_a_file_that_is_not_what_its_suffix_says_is_a_data_error(tmp_path):
    mat, npz, npy = tmp_path / "f.mat", tmp_path / "g.npz", tmp_path / "h.npz"
    mat.write_bytes(b"not a mat file at all" * 10)
    npz.write_bytes(b"not a zip")
    with open(npy, "wb") as handle:
        np.save(handle, np.zeros(3))
    with pytest.raises(DataError, match="not a MATLAB .mat file"):
        read_arrays(mat)
    with pytest.raises(DataError, match="not a NumPy .npz archive"):
        read_arrays(npz)
    with pytest.raises(DataError, match="single .npy array"):
        read_arrays(npy)



@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"hello, not a mat file\n" * 10, "not a MATLAB .mat file: it does not start with the header of MATLAB's v5 / v7 format"),
        (b"# Created by Octave 8.4.0\n# name: x\n", "not a MATLAB .mat file: it is Octave's text format"),
        (b"PK\x03\x04" + bytes(60), "not a MATLAB .mat file: it is a zip archive, as numpy.savez writes: name it .npz"),
        (b"\x93NUMPY" + bytes(60), "not a MATLAB .mat file: it is a single NumPy .npy array"),
        (b"", "not a MATLAB .mat file: it is empty"),
    ],
    ids=["text", "octave-text", "zip", "npy", "empty"],
)
def test_a_mat_file_that_is_not_matlabs_says_what_it_is_not_what_scipy_says(tmp_path, content, words):
    path = tmp_path / "f.mat"
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        read_arrays(path)
    assert words in str(error.value) and "truncated" not in str(error.value)


def test_a_damaged_matlab_file_is_called_damaged(tmp_path, arrays):
    whole = save_mat(tmp_path / "whole.mat", arrays).read_bytes()
    path = tmp_path / "f.mat"
    path.write_bytes(whole[:200])  # the MATLAB header, then the data cut short
    with pytest.raises(DataError, match="is a damaged MATLAB .mat file"):
        read_arrays(path)

# -------------------------------------------------------------------------------- names


def test_the_motivating_users_names(tmp_path, arrays):
    params = {"encoder": arrays["W1"], "decoder": arrays["W2"], "x": arrays["x"][:1]}
    grads = {"gEncoder": params["encoder"] * 2, "gDecoder": params["decoder"] * 3}
    f = read_gradient_file(save_mat(tmp_path / "f.mat", {**params, **grads}))
    assert f.names == {"x": "x", "W1": "encoder", "grad W1": "gEncoder", "W2": "decoder", "grad W2": "gDecoder"}
    assert f.layers == [V, H, V] and not f.bias and not f.tied
    np.testing.assert_array_equal(f.grads["W2"], arrays["W2"] * 3)


@pytest.mark.parametrize("prefix", ["d", "g", "grad_", "grad"])
def test_gradient_prefixes(tmp_path, arrays, prefix):
    path = save_mat(tmp_path / "f.mat", {**arrays, **grads_like(arrays, prefix)})
    f = read_gradient_file(path)
    assert f.names["grad b2"] == f"{prefix}b2" and f.bias


def test_gradients_may_use_gradproofs_names_for_aliased_parameters(tmp_path, arrays):
    variables = {"encoder": arrays["W1"], "decoder": arrays["W2"], "x": arrays["x"],
                 "dW1": arrays["W1"], "dW2": arrays["W2"]}
    f = read_gradient_file(save_mat(tmp_path / "f.mat", variables))
    assert f.names["grad W1"] == "dW1" and f.names["W2"] == "decoder"


def test_gradient_suffix(tmp_path, arrays):
    grads = {f"{k}_grad": v for k, v in grads_like(arrays, "").items()}
    f = read_gradient_file(save_mat(tmp_path / "f.mat", {**arrays, **grads}))
    assert f.names["grad W1"] == "W1_grad"


def test_map_names_gradients_parameters_and_input(tmp_path, arrays):
    variables = {
        "enc": arrays["W1"], "dec": arrays["W2"], "be": arrays["b1"], "bd": arrays["b2"],
        "imgs": arrays["x"], "gEnc": arrays["W1"], "delta_dec": arrays["W2"],
        "gbe": arrays["b1"], "gbd": arrays["b2"],
    }
    path = save_mat(tmp_path / "f.mat", variables)
    mapping = parse_mapping("enc=W1, dec=W2,be=b1,bd=b2,imgs=x,gEnc=W1,delta_dec=dW2,gbe=db1,gbd=grad_b2")
    f = read_gradient_file(path, mapping=mapping)
    assert f.names == {
        "x": "imgs", "W1": "enc", "grad W1": "gEnc", "b1": "be", "grad b1": "gbe",
        "W2": "dec", "grad W2": "delta_dec", "b2": "bd", "grad b2": "gbd",
    }


@pytest.mark.parametrize("text, words", [
    ("gEncoder", "VARIABLE=TARGET"),
    ("a=", "VARIABLE=TARGET"),
    ("a=Q7", "not x, a parameter"),
    ("a=W1,a=W2", "twice"),
])
def test_bad_map_text_is_an_input_error(text, words):
    with pytest.raises(InputError, match=words):
        parse_mapping(text)


def test_map_of_a_variable_the_file_lacks_lists_what_it_has(tmp_path, arrays):
    path = save_mat(tmp_path / "f.mat", {**arrays, **grads_like(arrays)})
    with pytest.raises(DataError, match=r"'gEnc'.*does not hold.*W1 \(6x4"):
        read_gradient_file(path, mapping={"gEnc": "W1"})


def test_missing_variables_say_what_was_found_and_what_is_needed(tmp_path, arrays):
    variables = {"encoder": arrays["W1"], "decoder": arrays["W2"], "gEncoder": arrays["W1"]}
    path = save_mat(tmp_path / "f.mat", variables)
    with pytest.raises(DataError) as info:
        read_gradient_file(path)
    text = str(info.value)
    assert "missing the input x" in text and "a gradient for decoder" in text
    assert "Found: encoder (6x4 float64), decoder (4x6 float64), gEncoder (6x4 float64)" in text
    assert "--map" in text


def test_two_candidates_for_one_gradient_is_a_data_error(tmp_path, arrays):
    variables = {**arrays, **grads_like(arrays, "d"), "gW1": arrays["W1"]}
    with pytest.raises(DataError, match="both 'dW1' and 'gW1' look like the gradient of W1"):
        read_gradient_file(save_mat(tmp_path / "f.mat", variables))


# ------------------------------------------------------------------------------ layout


def test_matlab_column_convention_is_brought_to_rows(tmp_path, arrays):
    variables = {
        "W1": arrays["W1"].T, "W2": arrays["W2"].T, "b1": arrays["b1"][:, None],
        "b2": arrays["b2"][:, None], "x": arrays["x"].T,
    }
    variables.update({f"d{k}": v for k, v in variables.items() if k != "x"})
    f = read_gradient_file(save_mat(tmp_path / "f.mat", variables))
    assert (f.examples, f.weights) == ("columns", "out_in")
    np.testing.assert_array_equal(f.x, arrays["x"])
    np.testing.assert_array_equal(f.params["W1"], arrays["W1"])
    np.testing.assert_array_equal(f.grads["W2"], arrays["W2"])
    assert f.params["b1"].shape == (H,) and f.grads["b1"].shape == (H,)


def test_weights_stored_transposed_with_rows_of_examples(tmp_path, arrays):
    params = {"encoder": arrays["W1"].T, "decoder": arrays["W2"].T, "x": arrays["x"]}
    grads = {"gEncoder": arrays["W1"].T, "gDecoder": arrays["W2"].T}
    f = read_gradient_file(save_mat(tmp_path / "f.mat", {**params, **grads}))
    assert (f.examples, f.weights) == ("rows", "out_in")
    assert f.params["W1"].shape == (V, H)


def test_a_gradient_of_the_transposed_shape_keeps_it(tmp_path, arrays):
    variables = {**arrays, **grads_like(arrays)}
    variables["dW2"] = variables["dW2"].T
    f = read_gradient_file(save_mat(tmp_path / "f.mat", variables))
    assert f.grads["W2"].shape == (V, H)  # for the checker to report `transposed`


def test_square_layers_fit_several_layouts_and_the_choice_is_noted(tmp_path):
    rng = np.random.default_rng(2)
    variables = {"W1": rng.normal(size=(5, 5)), "W2": rng.normal(size=(5, 5)), "x": rng.random((3, 5))}
    variables.update({f"d{k}": v for k, v in variables.items() if k != "x"})
    path = save_mat(tmp_path / "f.mat", variables)
    f = read_gradient_file(path)
    assert (f.examples, f.weights) == ("rows", "in_out")
    assert "more than one layout" in f.notes[0] and "--weights" in f.notes[0]
    forced = read_gradient_file(path, weights="out_in")
    assert forced.weights == "out_in" and forced.notes == []
    np.testing.assert_array_equal(forced.params["W1"], variables["W1"].T)


def test_one_weight_and_two_biases_make_a_tied_autoencoder(tmp_path, arrays):
    variables = {"W1": arrays["W1"], "b1": arrays["b1"], "b2": arrays["b2"], "x": arrays["x"]}
    variables.update({f"d{k}": v for k, v in variables.items() if k != "x"})
    f = read_gradient_file(save_mat(tmp_path / "f.mat", variables))
    assert f.tied and f.layers == [V, H, V] and set(f.params) == {"W1", "b1", "b2"}


def test_tied_flag_contradicting_the_file_is_a_data_error(tmp_path, arrays):
    path = save_mat(tmp_path / "f.mat", {**arrays, **grads_like(arrays)})
    with pytest.raises(DataError, match="--tied was given.*untied"):
        read_gradient_file(path, tied=True)


def test_shapes_that_fit_no_autoencoder_are_a_data_error(tmp_path, arrays):
    variables = {"W1": arrays["W1"], "W2": np.zeros((H + 1, V)), "x": arrays["x"]}
    variables.update({f"d{k}": v for k, v in variables.items() if k != "x"})
    with pytest.raises(DataError, match=r"shapes fit no autoencoder: x = x \(3x6\), W1 = W1 \(6x4\), W2 = W2 \(5x6\)"):
        read_gradient_file(save_mat(tmp_path / "f.mat", variables))


def test_a_gradient_of_neither_shape_is_a_data_error(tmp_path, arrays):
    variables = {**arrays, **grads_like(arrays)}
    variables["dW1"] = np.zeros((5, 5))
    with pytest.raises(DataError, match="gradient dW1 has shape 5x5; expected 6x4 like W1"):
        read_gradient_file(save_mat(tmp_path / "f.mat", variables))


def test_biases_that_do_not_match_the_weights_are_a_data_error(tmp_path, arrays):
    variables = {**arrays, "b3": arrays["b2"]}
    variables.update(grads_like(variables))
    with pytest.raises(DataError, match="3 biases for 2 weights"):
        read_gradient_file(save_mat(tmp_path / "f.mat", variables))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_name_the_variable_and_index(tmp_path, arrays, bad):
    variables = {**arrays, **grads_like(arrays)}
    variables["dW2"][2, 5] = bad
    with pytest.raises(DataError, match=r"variable dW2 has a non-finite value \((nan|inf)\) at index \[2, 5\].*dW2\(3, 6\)"):
        read_gradient_file(save_mat(tmp_path / "f.mat", variables))


def test_float32_gradients_keep_their_precision(tmp_path, arrays):
    variables = {**arrays, **{k: v.astype(np.float32) for k, v in grads_like(arrays).items()}}
    path = tmp_path / "f.npz"
    np.savez(path, **variables)
    f = read_gradient_file(path)
    assert f.grads["W1"].dtype == np.float32 and f.params["W1"].dtype == np.float64


def test_bad_layout_options_are_input_errors(tmp_path, arrays):
    path = save_mat(tmp_path / "f.mat", {**arrays, **grads_like(arrays)})
    with pytest.raises(InputError, match="examples must be"):
        read_gradient_file(path, examples="diagonal")
