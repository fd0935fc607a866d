function [J, grad] = seed_backprop(theta, x, n_hidden)
% The motivating user's cost: a sigmoid autoencoder n_visible-n_hidden-n_visible, one example
% per row of x (row-vector convention), loss sum(0.5*(z-x).^2), theta = [encoder(:); decoder(:)].
% It holds the user's two mistakes; seed_backprop_fixed.m is the corrected version.
  n_visible = size(x, 2);
  encoder = reshape(theta(1:n_visible * n_hidden), n_visible, n_hidden);        % (n_visible, n_hidden)
  decoder = reshape(theta(n_visible * n_hidden + 1:end), n_hidden, n_visible);  % (n_hidden, n_visible)
  a = 1 ./ (1 + exp(-x * encoder));  % (m, n_hidden)
  z = 1 ./ (1 + exp(-a * decoder));  % (m, n_visible)
  J = sum(0.5 * (z(:) - x(:)).^2);
  error_0 = (z - x) .* z .* (1 - z);  % (m, n_visible), dJ/d(a * decoder)
  % Mistake 1: (n_visible, n_hidden), the transpose of the decoder's shape.
  gDecoder = error_0' * a;
  % Mistake 2: the error goes back through the encoder, where decoder' belongs.
  error_1 = (error_0 * encoder) .* a .* (1 - a);  % (m, n_hidden)
  gEncoder = x' * error_1;  % (n_visible, n_hidden), like encoder
  grad = [gEncoder(:); gDecoder(:)];
end
