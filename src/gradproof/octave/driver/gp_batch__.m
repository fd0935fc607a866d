function gp_batch__(f, theta, dir)
  % J at many points near theta, into dir/out.mat. Point k moves the entries
  % positions(start(k)+1:start(k+1)) (1-based) to the same entries of values; the loop
  % runs here so that one exchange with gradproof serves the whole batch.
  moves = load(fullfile(dir, 'in.mat'));
  positions = moves.positions(:);
  start = moves.start(:);
  values = moves.values(:);
  base = theta;
  count = numel(start) - 1;
  J = zeros(count, 1);
  for k = 1:count
    piece = start(k) + 1:start(k + 1);
    moved = positions(piece);
    theta(moved) = values(piece);
    try
      value = f(theta);
    catch err
      rethrow(struct('message', sprintf('at point %d of the batch: %s', k, err.message), ...
                     'identifier', err.identifier, 'stack', err.stack));
    end
    if ~(isnumeric(value) && isscalar(value) && isreal(value))
      error('gradproof:point', 'at point %d of the batch J was a %s of size %s, not a real scalar', ...
            k, class(value), mat2str(size(value)));
    end
    J(k) = double(value);
    theta(moved) = base(moved);
  end
  save('-mat', fullfile(dir, 'out.mat'), 'J');
end
