function [J, grad] = seed_backprop_fixed(theta, x, n_hidden)
% seed_backprop.m with both mistakes corrected: the decoder's gradient has the decoder's shape,
% and the hidden layer's error comes back through the decoder's transpose.
  n_visible = size(x, 2);
  encoder = reshape(theta(1:n_visible * n_hidden), n_visible, n_hidden);        % (n_visible, n_hidden)
  decoder = reshape(theta(n_visible * n_hidden + 1:end), n_hidden, n_visible);  % (n_hidden, n_visible)
  a = 1 ./ (1 + exp(-x * encoder));  % (m, n_hidden)
  z = 1 ./ (1 + exp(-a * decoder));  % (m, n_visible)
  J = sum(0.5 * (z(:) - x(:)).^2);
  error_0 = (z - x) .* z .* (1 - z);  % (m, n_visible), dJ/d(a * decoder)
  gDecoder = a' * error_0;  % (n_hidden, n_visible), like decoder
  error_1 = (error_0 * decoder') .* a .* (1 - a);  % (m, n_hidden), sigma' = a(1-a)
  gEncoder = x' * error_1;  % (n_visible, n_hidden), like encoder
  grad = [gEncoder(:); gDecoder(:)];
end
