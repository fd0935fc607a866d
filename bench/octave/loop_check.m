function seconds = loop_check(f, theta, count)
% The check the courses teach: a central difference of J for each of the first count entries,
% one entry at a time, with step 1e-4; returns the seconds it took.
  h = 1e-4;
  numgrad = zeros(count, 1);
  started = tic();
  for i = 1:count
    moved = theta;
    moved(i) = theta(i) + h;
    plus = f(moved);
    moved(i) = theta(i) - h;
    minus = f(moved);
    numgrad(i) = (plus - minus) / (2 * h);
  end
  seconds = toc(started);
end
